//! Sense data parser: any bytes, no panic; decoded fields stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sense) = sg_pr::Sense::parse(data) {
        let _ = sense.to_string();
        let _ = sense.is_preemption_notice();
        let _ = sense.is_unsupported_command();
    }
});
