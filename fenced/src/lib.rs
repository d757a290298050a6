//! The fencing daemon.
