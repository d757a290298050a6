//! The `fenced` command line: the clap definitions of every subcommand and its options.
//!
//! In the library rather than the binary so that the man page and shell completions are
//! generated from the same definitions (`fenced/docgen`); the binary's `commands/` modules run
//! them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config;
use crate::vdisk::{ClusterId, Timeouts};

/// Exit codes of `fenced`, shown after `--help` and in the man page.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure (I/O error, bad disk contents, a failed check)
  2  bad command line
  3  refused: the command would destroy data and --force was not given
  4  a fence not confirmed on every LUN (the report names them): the node is not fenced
  5  status: the daemon runs healthy, but a LUN, a path or a voting disk is degraded
  6  status: no daemon runs, its loop is not healthy, or no read-majority of voting disks
  7  status, run: the authority marks this node dead (it is fenced; run refuses to start
     until the node has rebooted, then waits to be let back in)
With --json a command prints its result as one JSON document on stdout; fence, clear and
unfence print {\"ok\":false,\"error\":...} on failure too.

Invoked as fence_fenced (a link to this binary), it is the Pacemaker fence agent: see fence_fenced(8).";

/// The `fenced` command, as clap builds it: for the man page and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The `fenced` command line.
#[derive(Debug, Parser)]
#[command(
    name = "fenced",
    version,
    about = "Fencing daemon: voting disks, SCSI-3 PR fencing, watchdog",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub group: Group,
}

/// The subcommand groups.
#[derive(Debug, Subcommand)]
pub enum Group {
    /// Voting disks: format, inspect and watch.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Watchdogs: list them and the policy's choice; test that one resets this node.
    #[command(subcommand)]
    Watchdog(WatchdogCommand),
    /// Run the daemon in the foreground (as systemd's fenced.service does).
    ///
    /// SIGTERM or SIGINT is a clean leave: the slot says "leaving", a node that stays takes
    /// this node's key and reservations over (with none live, the daemon unregisters its key
    /// itself), the watchdog is disarmed and the daemon exits 0. The node keeps running, out of
    /// the cluster and unable to write to the PR-protected LUNs. A crash or SIGKILL leaves the
    /// watchdog armed: the node resets within timeouts.watchdog unless a new daemon takes over.
    Run(RunArgs),
    /// Fence a node: cut it off every shared LUN and mark it dead (exit 0 only when verified).
    Fence(NodeArgs),
    /// Let a fenced node rejoin once it has rebooted: a new marker without it in the dead set.
    Clear(ClearArgs),
    /// Register this node's key on every path of every LUN again (after a reboot or a clear).
    Unfence(LocalArgs),
    /// Show voting disks, authority, heartbeats, keys per LUN, reservation holders, watchdogs.
    Status(LocalArgs),
    /// Preflight checks: config and timing, voting disks, LUNs and PR support, watchdog.
    ///
    /// Each check prints PASS, WARN or FAIL, and for WARN and FAIL what to do. SCSI LUNs: TEST
    /// UNIT READY and this node's key on every path, REPORT CAPABILITIES (type 5, PTPL), READ
    /// FULL STATUS, the reservation, PREEMPT AND ABORT (probed). NVMe namespaces: Identify
    /// (reservations in the controller's ONCS; Write Exclusive Registrants Only and PTPL in the
    /// namespace's RESCAP), the reservation as the Reservation Report shows it. The transport's
    /// timeouts against half the fence deadline: iSCSI replacement_timeout, FC
    /// fast_io_fail_tmo/dev_loss_tmo, multipath no_path_retry, and each NVMe over Fabrics
    /// controller's fast_io_fail_tmo/ctrl_loss_tmo (against the lease as well).
    Doctor(DoctorArgs),
    /// Write fenced.toml for the cluster's nodes (formatting the voting disks with --format).
    Setup(SetupArgs),
}

/// The configuration file option every node command takes.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', default_value = config::DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
}

/// `fenced run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `fenced fence NODE` / `fenced clear NODE`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The node (name or id).
    pub node: String,
}

/// `fenced clear NODE`.
#[derive(Debug, Args)]
pub struct ClearArgs {
    /// The node to let back in.
    #[command(flatten)]
    pub target: NodeArgs,
    /// Let it back in even though its voting-disk slot does not show that it rebooted since
    /// its fence (a node known to be down, or one running a fenced that does not record
    /// boots). A node that did not reboot may still run what it ran when it was evicted.
    #[arg(long)]
    pub force: bool,
}

/// `fenced unfence` / `fenced status`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fenced doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Voting-disk commands.
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Format voting disks: write the header and clear every slot.
    Format(FormatArgs),
    /// Print the header, every written slot with its CRC verdict, and the authority.
    Dump(DumpArgs),
    /// Poll the disks every period as the daemon does (read-only) and print each round: disks
    /// answering, read majority, authority, every live slot's heartbeat and its age; with
    /// `--for` or `--rounds`, a summary with the worst round time at the end.
    Watch(WatchArgs),
}

/// `fenced disk format`.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Cluster UUID (8-4-4-4-12 hex); every voting disk of a cluster carries the same one.
    #[arg(long, value_name = "UUID")]
    pub cluster: ClusterId,
    /// Number of node slots (1-255); node slot numbers are 0..N-1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub slots: u8,
    /// Overwrite disks that already hold a voting-disk header or other data.
    #[arg(long)]
    pub force: bool,
    /// The timeouts written in the header.
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Voting disks (block devices or files).
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
}

/// The timeouts a voting-disk header holds (the cluster's timing model).
#[derive(Debug, Args)]
pub struct TimeoutArgs {
    /// Poll period P in ms.
    #[arg(long, default_value_t = Timeouts::default().poll_ms)]
    pub poll_ms: u32,
    /// I/O deadline D of a round in ms (D < P).
    #[arg(long, default_value_t = Timeouts::default().io_deadline_ms)]
    pub io_deadline_ms: u32,
    /// Lease L in ms (L >= 2P + D).
    #[arg(long, default_value_t = Timeouts::default().lease_ms)]
    pub lease_ms: u32,
    /// Watchdog timeout W in ms (W >= 2P).
    #[arg(long, default_value_t = Timeouts::default().watchdog_ms)]
    pub watchdog_ms: u32,
}

impl TimeoutArgs {
    /// As the header holds them.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            poll_ms: self.poll_ms,
            io_deadline_ms: self.io_deadline_ms,
            lease_ms: self.lease_ms,
            watchdog_ms: self.watchdog_ms,
        }
    }
}

/// `fenced setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The cluster's name (corosync's cluster_name under Pacemaker).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A node's name as the clusterware knows it, once per node, in node-id order (0, 1, ...).
    #[arg(long = "node", value_name = "NAME", required = true)]
    pub nodes: Vec<String>,
    /// A voting disk, once per disk (three, on separate arrays, is best). Name it the same way
    /// on every node: /dev/disk/by-id/wwn-*.
    #[arg(long = "voting-disk", value_name = "DEV", required = true)]
    pub voting_disks: Vec<PathBuf>,
    /// The shared LUNs to protect, once per device or glob; a glob of WWIDs
    /// (/dev/disk/by-id/wwn-0x6001405*) names the same LUNs on every node and takes new ones.
    #[arg(long = "lun", value_name = "PATTERN")]
    pub luns: Vec<String>,
    /// Format the voting disks first (refused on formatted disks without --force). Without
    /// it, the cluster UUID and the timeouts are read from the disks' header.
    #[arg(long)]
    pub format: bool,
    /// The cluster UUID: with --format, a new random one when left out; without, checked
    /// against the disks'.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<ClusterId>,
    /// With --format: slots on the voting disks (default: one per node; more leave room to add
    /// nodes later).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub slots: Option<u8>,
    /// With --format: the timeouts the header holds (the configurations do not repeat them).
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Overwrite formatted voting disks (with --format) and existing configuration files.
    #[arg(long)]
    pub force: bool,
    /// Write every node's configuration into DIR, as NAME.toml, for copying to
    /// /etc/fenced/fenced.toml on each node.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "this_node",
        conflicts_with = "this_node"
    )]
    pub dir: Option<PathBuf>,
    /// Write only this node's configuration, to --config.
    #[arg(long, value_name = "NAME")]
    pub this_node: Option<String>,
    /// Where --this-node writes.
    #[arg(long, short = 'c', default_value = config::DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
}

/// `fenced disk dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Expect this cluster; by default the cluster most disks carry.
    #[arg(long, value_name = "UUID")]
    pub cluster: Option<ClusterId>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Voting disks (block devices or files).
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
}

/// `fenced disk watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stop after this many seconds (default: run until interrupted; then no summary is printed).
    #[arg(long = "for", value_name = "SECS", conflicts_with = "rounds", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Stop after this many rounds.
    #[arg(long, value_name = "N")]
    pub rounds: Option<u64>,
    /// Poll period in ms, 1-3600000 (default: the period the disks were formatted with).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub period: Option<u64>,
    /// Deadline of each round's I/O in ms, 1-60000 (default: the one the disks were formatted
    /// with).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub io_deadline: Option<u64>,
    /// Time a round may take past the I/O deadline (to decode what it read) before it counts as
    /// overrunning, in ms (default: a tenth of the I/O deadline).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub grace: Option<u64>,
    /// Expect this cluster; by default the cluster most disks carry.
    #[arg(long, value_name = "UUID")]
    pub cluster: Option<ClusterId>,
    /// Print one JSON object per line (rounds, then a final `{"summary": ...}`).
    #[arg(long)]
    pub json: bool,
    /// Voting disks (block devices or files).
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
}

/// Watchdog commands.
#[derive(Debug, Subcommand)]
pub enum WatchdogCommand {
    /// List the watchdog devices, the one the policy would use, and why.
    List(ListArgs),
    /// Arm a watchdog and stop feeding it: the node should reset within the timeout (the
    /// equivalent of `sbd test-watchdog`). Requires --yes-reset-this-node.
    Test(TestArgs),
}

/// The operator's watchdog policy, as on the command line and in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Use a hardware watchdog; refuse to run without one.
    RequireHardware,
    /// Use a hardware watchdog if there is one, else load and use softdog.
    AllowSoftdog,
}

/// Policy selection shared by both commands.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Which kinds of watchdog may be used.
    #[arg(long, value_enum, default_value_t = PolicyArg::RequireHardware)]
    pub policy: PolicyArg,
    /// Use exactly this device (e.g. /dev/watchdog1) whatever the policy.
    #[arg(long, value_name = "DEV")]
    pub device: Option<PathBuf>,
    /// softdog_margin for modprobe when allow-softdog has to load softdog, seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub soft_margin: u32,
}

/// `fenced watchdog list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which watchdog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `fenced watchdog test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Which watchdog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Timeout to arm with, seconds (the driver may adjust it; the real value is printed).
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub timeout: u32,
    /// Also set nowayout, so the test cannot be cancelled.
    #[arg(long)]
    pub nowayout: bool,
    /// Confirms that this node may be reset by the test.
    #[arg(long)]
    pub yes_reset_this_node: bool,
    /// Print the deadline as JSON.
    #[arg(long)]
    pub json: bool,
}

impl PolicyArgs {
    /// The watchdog policy these options select.
    pub fn policy(&self) -> watchdog::Policy {
        use watchdog::Policy;
        match (&self.device, self.policy) {
            (Some(dev), _) => Policy::Device(dev.clone()),
            (None, PolicyArg::RequireHardware) => Policy::RequireHardware,
            (None, PolicyArg::AllowSoftdog) => Policy::AllowSoftdog {
                soft_margin: self.soft_margin,
                soft_panic: false,
            },
        }
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}
