//! PERSISTENT RESERVE IN reply parsers and the TransportID decoder: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = sg_pr::RegisteredKeys::parse(data) {
        assert!(keys.keys.len() * 8 <= data.len().saturating_sub(8));
    }
    let _ = sg_pr::ReservationStatus::parse(data);
    let _ = sg_pr::Capabilities::parse(data);
    if let Ok(status) = sg_pr::FullStatus::parse(data) {
        for r in &status.registrations {
            if let Some(t) = &r.transport_id {
                let _ = t.to_string();
            }
        }
    }
    if let Ok((_, len)) = sg_pr::TransportId::parse(data) {
        assert!(len <= data.len());
    }
});
