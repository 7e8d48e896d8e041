//! TeamTalk reference daemons (work in progress).
#![forbid(unsafe_code)]
