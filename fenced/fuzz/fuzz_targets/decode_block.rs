//! Fuzz the voting-disk block decoders: arbitrary bytes must never panic, and anything that
//! decodes must re-encode to exactly the same block.
#![no_main]

use fenced::vdisk::format::{
    decode_header, decode_slot, decode_slot_any, encode_header, encode_slot, Block, BLOCK_SIZE,
};
use fenced::vdisk::ClusterId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut block: Block = [0u8; BLOCK_SIZE];
    let n = data.len().min(BLOCK_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    check(&block, data.len());
    // Also the same bytes with a valid CRC, so mutated fields get past the checksum.
    let crc = crc32fast::hash(&block[..BLOCK_SIZE - 4]);
    block[BLOCK_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    check(&block, data.len());
});

fn check(block: &Block, len: usize) {
    if let Ok(h) = decode_header(block) {
        let mut again = [0u8; BLOCK_SIZE];
        encode_header(&h, &mut again);
        assert_eq!(decode_header(&again), Ok(h));
    }
    if let Ok(s) = decode_slot_any(block) {
        let mut again = [0u8; BLOCK_SIZE];
        encode_slot(&s, &mut again);
        assert_eq!(decode_slot(&again, &s.cluster, s.slot), Ok(s));
    }
    let _ = decode_slot(block, &ClusterId([0x5a; 16]), (len % 256) as u8);
}
