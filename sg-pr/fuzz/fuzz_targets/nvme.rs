//! NVMe Reservation Report data structures, standard and extended: any bytes, no panic, and
//! never more controllers listed than the bytes hold. Identify Namespace's RESCAP and Identify
//! Controller's ONCS: any bytes, no panic, decoded only from bytes that are there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sg_pr::nvme::{OptionalCommands, ReservationCapabilities, ReservationReport};

fuzz_target!(|data: &[u8]| {
    for extended in [false, true] {
        if let Ok(r) = ReservationReport::parse(data, extended) {
            assert!(ReservationReport::len_for(r.controllers.len(), extended) <= data.len());
            assert!(r.controllers.len() <= usize::from(r.registered));
            let _ = (r.keys(), r.reservation(), r.truncated());
            for c in &r.controllers {
                let _ = c.host_id.to_string();
            }
        }
    }
    if let Ok(c) = ReservationCapabilities::parse(data) {
        assert_eq!(Some(c.bits()), data.get(31).copied());
        let _ = (c.types(), c.persist_through_power_loss());
    }
    if let Ok(c) = OptionalCommands::parse(data) {
        assert!(data.len() >= 522);
        let _ = c.reservations();
    }
});
