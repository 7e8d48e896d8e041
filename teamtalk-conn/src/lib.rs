//! Sans-IO TeamTalk connection machines (work in progress).
#![forbid(unsafe_code)]

mod machine;

pub use machine::{Input, Machine, Output};
