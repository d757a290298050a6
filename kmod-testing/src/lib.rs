//! QEMU harness: boots real Linux kernels with real SCSI targets and watchdogs.
