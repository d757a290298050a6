//! NVMe Reservation Report data structures, standard and extended: any bytes, no panic, and
//! never more controllers listed than the bytes hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sg_pr::nvme::ReservationReport;

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
});
