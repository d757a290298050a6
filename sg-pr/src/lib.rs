//! SCSI-3 persistent reservations over SG_IO.
