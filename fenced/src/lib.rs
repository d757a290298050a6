//! The fencing daemon's library: everything `fenced` does, behind safe, typed APIs.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into this crate.
#![deny(missing_docs)]

pub mod agent;
pub mod args;
pub mod channel;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod fence;
pub mod health;
pub mod journal;
pub mod keycheck;
pub mod luns;
pub mod notify;
pub mod ops;
pub mod reload;
pub mod rt;
pub mod selffence;
pub mod storage;
pub mod transport;
pub mod vdisk;
