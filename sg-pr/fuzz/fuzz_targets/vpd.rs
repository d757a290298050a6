//! INQUIRY standard data and VPD 0x00/0x80/0x83 parsers: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sg_pr::StandardInquiry::parse(data);
    let _ = sg_pr::inquiry::parse_supported_vpd_pages(data);
    let _ = sg_pr::inquiry::parse_unit_serial_number(data);
    if let Ok(id) = sg_pr::DeviceIdentification::parse(data) {
        let _ = id.lun_id();
        let _ = id.relative_target_port();
        for d in &id.designations {
            let _ = d.designator.to_string();
        }
    }
});
