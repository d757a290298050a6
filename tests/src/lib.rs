//! End-to-end scenarios on the VM harness.
