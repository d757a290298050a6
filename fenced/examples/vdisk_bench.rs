//! Cost of one voting-disk poll round: the io_uring poller vs synchronous pread loops.
//!
//! ```text
//! cargo run --release -p fenced --example vdisk_bench -- [ROUNDS] [DIR]
//! ```
//!
//! Creates 3 voting-disk files of 255 written slots in DIR (default /var/tmp; it must support
//! O_DIRECT, so not tmpfs), then per round measures wall time (CLOCK_MONOTONIC) and process CPU
//! time (CLOCK_PROCESS_CPUTIME_ID, which includes io_uring's io-wq worker threads) of:
//!   uring      `VotingDisks::poll_round`: 3 reads of 256 blocks, one batch, decode, authority
//!   pread-4k   768 synchronous O_DIRECT preads of 4 KiB (3 disks x 256 blocks), decode each
//!   preadv-1m  3 synchronous O_DIRECT preadv of 1 MiB (one per disk), decode each block

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fenced::vdisk::admin;
use fenced::vdisk::format::{decode_header, decode_slot, Block};
use fenced::vdisk::{
    AlignedBlock, Header, Marker, NodeName, OpenOptions, SlotBlock, SlotState, Timeouts,
    VotingDisks, BLOCK_SIZE,
};
use nix::time::{clock_gettime, ClockId};

const DISKS: usize = 3;
const SLOTS: u8 = 255;

fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("cpu clock");
    Duration::new(
        u64::try_from(t.tv_sec()).unwrap_or(0),
        u32::try_from(t.tv_nsec()).unwrap_or(0),
    )
}

struct Stats {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Stats {
    fn new(n: usize) -> Self {
        Stats {
            wall: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
        }
    }

    fn measure(&mut self, f: impl FnOnce()) {
        let (w0, c0) = (Instant::now(), cpu_now());
        f();
        self.wall.push(w0.elapsed());
        self.cpu.push(cpu_now().saturating_sub(c0));
    }

    fn report(&mut self, name: &str) {
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort_unstable();
            v[(v.len() - 1) * p / 100]
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (w50, w99, wmax) = (
            pct(&mut self.wall, 50),
            pct(&mut self.wall, 99),
            pct(&mut self.wall, 100),
        );
        let (c50, c99) = (pct(&mut self.cpu, 50), pct(&mut self.cpu, 99));
        println!(
            "| {name:<9} | {:>11.1} | {:>11.1} | {:>11.1} | {:>10.1} | {:>10.1} |",
            us(w50),
            us(w99),
            us(wmax),
            us(c50),
            us(c99)
        );
    }
}

fn decode_all(block: &Block, slot: Option<u8>, header: &Header) -> usize {
    match slot {
        None => usize::from(decode_header(block).is_ok()),
        Some(s) => usize::from(decode_slot(block, &header.cluster, s).is_ok()),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let base = PathBuf::from(args.next().unwrap_or_else(|| "/var/tmp".into()));
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let cluster = "5a1f0c3e-7d2b-4e8a-9c61-0123456789ab".parse().unwrap();
    let header = Header::new(cluster, SLOTS, Timeouts::default());
    let paths: Vec<PathBuf> = (0..DISKS)
        .map(|i| {
            let p = dir.path().join(format!("vote{i}.img"));
            File::create(&p)
                .unwrap()
                .set_len(header.disk_bytes())
                .unwrap();
            admin::format_disk(&p, &header, false).expect("format (is DIR on tmpfs?)");
            p
        })
        .collect();

    let mut disks = VotingDisks::open(&paths, &OpenOptions::default()).expect("open");
    for slot in 0..SLOTS {
        let b = SlotBlock {
            cluster,
            slot,
            state: SlotState::Joined,
            node_name: NodeName::new(&format!("node-{slot}")).unwrap(),
            incarnation: u64::from(slot) * 7919,
            heartbeat_seq: 1,
            heartbeat_mono_ms: 1,
            marker: Marker::default(),
            boot: fenced::vdisk::BootId::NIL,
            fenced_boot: fenced::vdisk::BootId::NIL,
        };
        disks.write_own_slot(&b).expect("fill slots");
    }
    println!(
        "{DISKS} disks x {SLOTS} slots (all written), {rounds} rounds, files in {}, fixed buffers: {}",
        base.display(),
        disks.uses_fixed_buffers()
    );

    let mut uring = Stats::new(rounds);
    let mut valid = 0;
    for _ in 0..rounds {
        uring.measure(|| {
            let r = disks.poll_round();
            valid = (0..DISKS)
                .map(|d| {
                    (0..SLOTS)
                        .filter(|&s| matches!(r.slot(d, s), Some(Ok(_))))
                        .count()
                })
                .sum::<usize>();
        });
    }
    assert_eq!(valid, DISKS * usize::from(SLOTS), "every slot decodes");

    let files: Vec<File> = paths
        .iter()
        .map(|p| {
            FsOpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .unwrap()
        })
        .collect();
    let mut block = AlignedBlock::ZERO;
    let mut pread4k = Stats::new(rounds);
    for _ in 0..rounds {
        pread4k.measure(|| {
            let mut ok = 0;
            for f in &files {
                for i in 0..=usize::from(SLOTS) {
                    f.read_exact_at(&mut block.0, (i * BLOCK_SIZE) as u64)
                        .unwrap();
                    let slot = i.checked_sub(1).map(|s| u8::try_from(s).unwrap());
                    ok += decode_all(&block.0, slot, &header);
                }
            }
            assert_eq!(ok, DISKS * 256);
        });
    }

    let mut big = vec![AlignedBlock::ZERO; 1 + usize::from(SLOTS)];
    let mut pread1m = Stats::new(rounds);
    for _ in 0..rounds {
        pread1m.measure(|| {
            let mut ok = 0;
            for f in &files {
                read_contiguous(f, &mut big);
                for (i, b) in big.iter().enumerate() {
                    let slot = i.checked_sub(1).map(|s| u8::try_from(s).unwrap());
                    ok += decode_all(&b.0, slot, &header);
                }
            }
            assert_eq!(ok, DISKS * 256);
        });
    }

    println!("| method    | wall p50 µs | wall p99 µs | wall max µs | CPU p50 µs | CPU p99 µs |");
    println!("|-----------|------------:|------------:|------------:|-----------:|-----------:|");
    uring.report("uring");
    pread4k.report("pread-4k");
    pread1m.report("preadv-1m");
}

/// One synchronous O_DIRECT `preadv` of all 256 blocks of a disk (1 MiB, one syscall), one
/// aligned iovec per block.
fn read_contiguous(f: &File, blocks: &mut [AlignedBlock]) {
    let mut slices: Vec<std::io::IoSliceMut<'_>> = blocks
        .iter_mut()
        .map(|b| std::io::IoSliceMut::new(&mut b.0))
        .collect();
    let n = nix::sys::uio::preadv(f, &mut slices, 0).expect("preadv");
    assert_eq!(n, slices.len() * BLOCK_SIZE);
}
