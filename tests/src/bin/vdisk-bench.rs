//! Test-only benchmark driver run inside a guest (see tests/bench/vdisk.sh).
//!
//! ```text
//! vdisk-bench rounds N DEV...           # formats the disks with 255 slots, writes every slot,
//!                                       # then times N rounds of each method
//! vdisk-bench exec N -- CMD ARGS...     # runs CMD N times, times each whole process
//! ```
//!
//! `rounds` methods, each per round and including decode + CRC of all 3 x 256 blocks:
//! `uring` (`VotingDisks::poll_round`: one 1 MiB read per disk through io_uring, bounded wait),
//! `pread-4k` (768 synchronous O_DIRECT preads of 4 KiB, the naive loop), `pread-1m` (3
//! synchronous O_DIRECT preads of 1 MiB). Wall time: CLOCK_MONOTONIC; CPU time:
//! CLOCK_PROCESS_CPUTIME_ID (includes io_uring's io-wq workers). `exec` reports wall time and the
//! children's user+system CPU time (getrusage RUSAGE_CHILDREN) per process. Prints medians and
//! p90 as Markdown table rows.
//!
//! Experiment switches: `VDISK_BENCH_SLOTS=N` formats N slots instead of 255;
//! `VDISK_BENCH_WORKERS=1` waits for the slot writes' io-wq workers to retire, then reports on
//! stderr how many io-wq worker threads (`iou-wrk-*`) the io_uring rounds needed.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fenced::vdisk::admin;
use fenced::vdisk::format::{decode_header, decode_slot};
use fenced::vdisk::{
    AlignedBlock, ClusterId, Header, Marker, NodeName, OpenOptions, SlotBlock, SlotState, Timeouts,
    VotingDisks, BLOCK_SIZE,
};

/// Slots per disk (255 unless `VDISK_BENCH_SLOTS` says otherwise, for experiments).
fn slot_count() -> u8 {
    std::env::var("VDISK_BENCH_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(255)
}
const CLUSTER: &str = "5a1f0c3e-7d2b-4e8a-9c61-0123456789ab";

fn cpu_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn children_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` into the pointer we pass, which points at a
    // zero-initialised rusage we own; it has no other effect.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised above, and filled in by a successful getrusage.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

    fn row(&mut self, name: &str, n: usize) -> String {
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort_unstable();
            v.get((v.len().saturating_sub(1)) * p / 100)
                .copied()
                .unwrap_or_default()
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (w50, w90, wmax) = (
            pct(&mut self.wall, 50),
            pct(&mut self.wall, 90),
            pct(&mut self.wall, 100),
        );
        let (c50, c90) = (pct(&mut self.cpu, 50), pct(&mut self.cpu, 90));
        format!(
            "| {name} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(w50),
            ms(w90),
            ms(wmax),
            ms(c50),
            ms(c90)
        )
    }
}

const TABLE_HEAD: &str = "| method | runs | wall median ms | wall p90 ms | wall max ms | CPU median ms | CPU p90 ms |\n|---|---:|---:|---:|---:|---:|---:|";

fn rounds(n: usize, devs: &[String]) -> Result<(), String> {
    let slots = slot_count();
    let cluster: ClusterId = CLUSTER.parse().map_err(|e| format!("{e:?}"))?;
    let header = Header::new(cluster, slots, Timeouts::default());
    for d in devs {
        admin::format_disk(d.as_ref(), &header, true).map_err(|e| e.to_string())?;
    }
    // A generous deadline: this measures what a round costs, not whether it meets D (the VM
    // tests do that); a debug build under a starved TCG guest can exceed the default 500 ms.
    let opts = OpenOptions {
        io_deadline: Some(Duration::from_secs(5)),
        ..OpenOptions::default()
    };
    let mut disks = VotingDisks::open(devs, &opts).map_err(|e| e.to_string())?;
    for slot in 0..slots {
        let b = SlotBlock {
            cluster,
            slot,
            state: SlotState::Joined,
            node_name: NodeName::new(&format!("node-{slot}")).ok_or("node name")?,
            incarnation: u64::from(slot) * 7919 + 1,
            heartbeat_seq: 1,
            heartbeat_mono_ms: 1,
            marker: Marker::default(),
            boot: fenced::vdisk::BootId::NIL,
            fenced_boot: fenced::vdisk::BootId::NIL,
        };
        disks.write_own_slot(&b).map_err(|e| e.to_string())?;
    }
    let d = devs.len();
    // Experiment switch: let the io-wq workers of the slot writes above retire (they exit after
    // 5 s idle), so the worker threads counted after the io_uring rounds are the rounds' own.
    let count_workers = std::env::var_os("VDISK_BENCH_WORKERS").is_some();
    if count_workers {
        std::thread::sleep(Duration::from_secs(7));
        eprintln!("io-wq workers before the rounds: {}", io_workers());
    }
    eprintln!(
        "{d} disks x {slots} slots (all written), {n} rounds per method, fixed buffers: {}",
        disks.uses_fixed_buffers()
    );

    let mut s = Stats::new(n);
    for _ in 0..n {
        let (w0, c0) = (Instant::now(), cpu_now());
        let r = disks.poll_round();
        let valid: usize = (0..d)
            .map(|disk| {
                (0..slots)
                    .filter(|&slot| matches!(r.slot(disk, slot), Some(Ok(_))))
                    .count()
            })
            .sum();
        s.wall.push(w0.elapsed());
        s.cpu.push(cpu_now().saturating_sub(c0));
        if valid != d * usize::from(slots) {
            return Err(format!("uring round decoded {valid} valid slots"));
        }
    }
    if count_workers {
        eprintln!("io-wq workers after the io_uring rounds: {}", io_workers());
    }
    println!("{}", s.row("uring (poll_round)", n));

    let files: Vec<File> = devs
        .iter()
        .map(|p| {
            FsOpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .map_err(|e| format!("{p}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut block = Box::new(AlignedBlock::ZERO);
    let mut s = Stats::new(n);
    for _ in 0..n {
        let (w0, c0) = (Instant::now(), cpu_now());
        let mut valid = 0;
        for f in &files {
            f.read_exact_at(&mut block.0, 0)
                .map_err(|e| e.to_string())?;
            if decode_header(&block.0).is_err() {
                return Err("bad header".into());
            }
            for slot in 0..slots {
                let off = (1 + u64::from(slot)) * BLOCK_SIZE as u64;
                f.read_exact_at(&mut block.0, off)
                    .map_err(|e| e.to_string())?;
                valid += usize::from(decode_slot(&block.0, &cluster, slot).is_ok());
            }
        }
        s.wall.push(w0.elapsed());
        s.cpu.push(cpu_now().saturating_sub(c0));
        if valid != d * usize::from(slots) {
            return Err(format!("pread-4k decoded {valid} valid slots"));
        }
    }
    println!("{}", s.row("sync pread 4 KiB x 768", n));

    let mut big = vec![AlignedBlock::ZERO; 1 + usize::from(slots)].into_boxed_slice();
    let mut s = Stats::new(n);
    for _ in 0..n {
        let (w0, c0) = (Instant::now(), cpu_now());
        let mut valid = 0;
        for f in &files {
            f.read_exact_at(blocks_as_bytes(&mut big), 0)
                .map_err(|e| e.to_string())?;
            if decode_header(&big[0].0).is_err() {
                return Err("bad header".into());
            }
            for slot in 0..slots {
                valid +=
                    usize::from(decode_slot(&big[1 + usize::from(slot)].0, &cluster, slot).is_ok());
            }
        }
        s.wall.push(w0.elapsed());
        s.cpu.push(cpu_now().saturating_sub(c0));
        if valid != d * usize::from(slots) {
            return Err(format!("pread-1m decoded {valid} valid slots"));
        }
    }
    println!("{}", s.row("sync pread 1 MiB x 3", n));
    Ok(())
}

/// Threads of this process named `iou-wrk-*`: io_uring's io-wq workers, which exist only while
/// requests are punted to them (or for 5 s after).
fn io_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("iou-wrk"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The blocks as one byte slice (an `AlignedBlock` is `repr(C)` of exactly BLOCK_SIZE bytes,
/// so consecutive blocks are contiguous bytes).
fn blocks_as_bytes(blocks: &mut [AlignedBlock]) -> &mut [u8] {
    let len = std::mem::size_of_val(blocks);
    // SAFETY: `AlignedBlock` is `repr(C, align(4096))` around `[u8; 4096]`: size 4096, no
    // padding, every byte initialised, any byte pattern valid. The slice covers exactly the
    // memory of `blocks`, borrowed mutably for the same lifetime.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), len) }
}

fn exec(n: usize, cmd: &[String]) -> Result<(), String> {
    let (prog, args) = cmd.split_first().ok_or("exec: no command")?;
    let mut s = Stats::new(n);
    for i in 0..n {
        let (w0, c0) = (Instant::now(), children_cpu());
        let st = Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("{prog}: {e}"))?;
        s.wall.push(w0.elapsed());
        s.cpu.push(children_cpu().saturating_sub(c0));
        if !st.success() && i == 0 {
            return Err(format!("{} exited with {st}", cmd.join(" ")));
        }
    }
    println!("{}", s.row(&format!("`{}`", cmd.join(" ")), n));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let result = match args.first().map(String::as_str) {
        Some("rounds") if args.len() >= 3 => rounds(n, &args[2..]),
        Some("exec") if args.len() >= 4 && args[2] == "--" => exec(n, &args[3..]),
        Some("header") => {
            println!("{TABLE_HEAD}");
            Ok(())
        }
        _ => Err("usage: vdisk-bench rounds N DEV...  |  vdisk-bench exec N -- CMD ARGS...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vdisk-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
