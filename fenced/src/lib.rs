//! The fencing daemon's library: everything `fenced` does, behind safe, typed APIs.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into this crate.
#![deny(missing_docs)]

pub mod vdisk;
