//! Hardware watchdog discovery, arming and feeding.
