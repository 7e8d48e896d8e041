//! Drivers for teamtalk-conn machines (work in progress).
#![forbid(unsafe_code)]
