//! The `sg-pr` command line: the clap definitions of every subcommand and its options.
//!
//! In the library rather than the binary so that the man page and shell completions are
//! generated from the same definitions (`fenced/docgen`); the binary's `cli` module runs them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::{PrType, ReservationKey};

/// Exit codes and value syntax, shown after `--help` and in the man page.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success
   1  other failure (transport error, unexpected sense data, malformed reply)
   2  bad command line (including a malformed key)
   3  device unusable: nonexistent, permission denied, not a device node, a partition,
      not SCSI (try --backend block); or key 0 where it means nothing
   5  command not supported by the device or kernel
   6  device stayed busy / not ready / raised unit attentions through every retry
  15  timeout (per-command --timeout, or --deadline for several devices)
  24  RESERVATION CONFLICT (as sg3_utils): not registered, or own key preempted
With several devices the worst result wins: 24, then 15, then the first other failure.

Keys are hex, with or without 0x (0x1a2b, 1A2B). Types: we, ea, wero, earo, wear, eaar
(or SCSI codes 1, 3, 5, 6, 7, 8).";

/// The `sg-pr` command, as clap builds it: for the man page and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Persistent reservations (SCSI-3 PR) over SG_IO, and the Linux block-layer PR ioctls.
#[derive(Debug, Parser)]
#[command(name = "sg-pr", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Per-command timeout in seconds (SG_IO timeout).
    #[arg(long, global = true, default_value = "30", value_parser = parse_seconds)]
    pub timeout: Duration,

    /// How to reach the device: SG_IO, the block-layer PR ioctls, or SG_IO when the
    /// device speaks SCSI and the block layer otherwise.
    #[arg(long, global = true, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more (repeat for debug output) on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Device access method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Block-layer ioctls for device-mapper maps (dm-multipath registers every path) and
    /// devices that refuse SCSI ioctls (NVMe); SG_IO otherwise.
    Auto,
    /// SG_IO only (/dev/sdX, /dev/sgN).
    Sg,
    /// Block-layer IOC_PR_* ioctls only (NVMe, dm-multipath).
    Block,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// TEST UNIT READY (also clears a pending unit attention, which is reported).
    Tur(OneDevice),
    /// Standard INQUIRY, serial number (VPD 0x80) and device identification (VPD 0x83); on an
    /// NVMe namespace, its namespace id and identity (uuid, NGUID or EUI-64).
    Inquiry(OneDevice),
    /// Registered keys (PR IN READ KEYS).
    Keys(OneDevice),
    /// Current reservation (PR IN READ RESERVATION).
    Reservation(OneDevice),
    /// Persistent reservation capabilities (PR IN REPORT CAPABILITIES; on an NVMe namespace,
    /// Identify: reservations supported, the types, persist through power loss).
    Caps(OneDevice),
    /// Every registration with its initiator (PR IN READ FULL STATUS; on an NVMe namespace, the
    /// Reservation Report: every registered controller with its host identifier).
    Status(OneDevice),
    /// Register a key (REGISTER / REGISTER AND IGNORE EXISTING KEY); --key 0 unregisters.
    Register(RegisterArgs),
    /// Take a reservation (RESERVE).
    Reserve(TypedArgs),
    /// Release the reservation (RELEASE).
    Release(TypedArgs),
    /// Remove every registration and the reservation (CLEAR).
    Clear(KeyArgs),
    /// Remove the victim's registrations (PREEMPT, or PREEMPT AND ABORT with --abort), then
    /// confirm with READ KEYS that the victim's key is gone.
    Preempt(PreemptArgs),
}

/// A read command's one device.
#[derive(Debug, Args)]
pub struct OneDevice {
    /// Device node, e.g. /dev/sdb, /dev/sg2, /dev/disk/by-id/wwn-0x6001405...
    pub device: PathBuf,
}

/// Options shared by commands that act on several devices in parallel.
#[derive(Debug, Args)]
pub struct Many {
    /// Device nodes; the operation runs on all of them in parallel.
    #[arg(required = true)]
    pub devices: Vec<PathBuf>,
    /// Overall deadline in seconds for all devices; a device that has not answered by then
    /// is reported as timed out.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub deadline: Duration,
    /// Most devices worked on at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// `sg-pr register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Key to register (0 with --old-key or --ignore-existing unregisters).
    #[arg(long, value_parser = parse_key)]
    pub key: ReservationKey,
    /// Key currently registered through this path, to change or remove it.
    #[arg(long, value_parser = parse_key, conflicts_with = "ignore_existing")]
    pub old_key: Option<ReservationKey>,
    /// REGISTER AND IGNORE EXISTING KEY: replace whatever key this path has (use after an
    /// iSCSI re-login changed the I_T nexus).
    #[arg(long)]
    pub ignore_existing: bool,
    /// Persist through power loss (APTPL).
    #[arg(long)]
    pub aptpl: bool,
    /// Register through all target ports (ALL_TG_PT).
    #[arg(long)]
    pub all_tg_pt: bool,
    /// The devices and how to run on them.
    #[command(flatten)]
    pub many: Many,
}

/// `sg-pr reserve` / `sg-pr release`.
#[derive(Debug, Args)]
pub struct TypedArgs {
    /// This host's registered key.
    #[arg(long, value_parser = parse_key)]
    pub key: ReservationKey,
    /// Reservation type: we, ea, wero, earo, wear, eaar (or 1, 3, 5, 6, 7, 8).
    #[arg(long = "type", value_parser = parse_type)]
    pub pr_type: PrType,
    /// The devices and how to run on them.
    #[command(flatten)]
    pub many: Many,
}

/// `sg-pr clear`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// This host's registered key.
    #[arg(long, value_parser = parse_key)]
    pub key: ReservationKey,
    /// The devices and how to run on them.
    #[command(flatten)]
    pub many: Many,
}

/// `sg-pr preempt`.
#[derive(Debug, Args)]
pub struct PreemptArgs {
    /// This host's registered key.
    #[arg(long, value_parser = parse_key)]
    pub key: ReservationKey,
    /// The key to remove.
    #[arg(long, value_parser = parse_key)]
    pub victim: ReservationKey,
    /// Reservation type: we, ea, wero, earo, wear, eaar (or 1, 3, 5, 6, 7, 8).
    #[arg(long = "type", value_parser = parse_type)]
    pub pr_type: PrType,
    /// PREEMPT AND ABORT: also abort the victim's outstanding commands. Targets that lack
    /// it get a plain PREEMPT, and the output says so.
    #[arg(long)]
    pub abort: bool,
    /// The devices and how to run on them.
    #[command(flatten)]
    pub many: Many,
}

fn parse_key(s: &str) -> Result<ReservationKey, String> {
    ReservationKey::parse(s).map_err(|e| e.to_string())
}

fn parse_type(s: &str) -> Result<PrType, String> {
    s.parse::<PrType>().map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s}: give a number of seconds between 0 and 86400"));
    }
    Ok(Duration::from_secs_f64(secs))
}
