//! TEMPORARY placeholder, replaced by the generated prost modules.
#![allow(missing_docs)]
