//! Direct (O_DIRECT) 4 KiB block I/O inside a guest: the writes a fenced node must not get
//! through, and the reads that prove whether they did.

use kmod_testing::{Guest, Output, Result};

/// Writes block `block` (4 KiB) of `dev` filled with `byte`, bypassing the page cache. The
/// returned output's code is non-zero when the device refused the write.
pub fn write(guest: &Guest, dev: &str, block: u64, byte: u8) -> Result<Output> {
    guest.run(&format!(
        "head -c 4096 /dev/zero | tr '\\000' '\\{byte:03o}' > /tmp/pattern && \
         dd if=/tmp/pattern of={dev} bs=4096 seek={block} count=1 oflag=direct conv=notrunc,fsync status=none"
    ))
}

/// Reads block `block` of `dev` with O_DIRECT and returns the distinct byte values in it
/// (sorted): `[b'A']` for a block filled with 'A', `[0]` for a never-written block.
pub fn distinct_bytes(guest: &Guest, dev: &str, block: u64) -> Result<Vec<u8>> {
    let out = guest.run_ok(&format!(
        "dd if={dev} bs=4096 skip={block} count=1 iflag=direct status=none | od -An -v -tx1 | tr -s ' ' '\\n' | grep . | sort -u"
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| u8::from_str_radix(l.trim(), 16).ok())
        .collect())
}
