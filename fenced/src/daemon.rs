//! The daemon: start-up checks, then the loop that feeds the watchdog only while this node may
//! keep writing to shared storage.
//!
//! Start: check the configuration → optional start-up delay → read the voting disks; while the
//! authority marks this node dead, touch no LUN (registering the key of a fenced node would undo
//! its fence): refuse to start if the node has not rebooted since its fence, else wait to be let
//! back in ([`fenced_in`], fenced/docs/voting-disk-format.md "Rejoin evidence") → unfence (register the key on every path of
//! every LUN, reserve where nobody has, verify) → join our slot with a fresh incarnation → arm
//! the watchdog → READY=1.
//!
//! A start after a clean leave (our slot says Leaving) writes Joining first and waits
//! `leave_quiet` before registering; a start after a reload ([`crate::reload`]) takes the armed
//! watchdog and the incarnation over from the previous image instead of arming a new one.
//!
//! The loop, every P: one poll round (bounded by D), heartbeat in our slot (bounded by D),
//! decide ([`crate::health`]), feed the watchdog and systemd only when healthy. It allocates
//! nothing, takes no blocking lock and waits on nothing unbounded: READ KEYS runs on its own
//! thread and is read through atomics; commands hand it markers through `try_lock`. SIGTERM or
//! SIGINT (read from a signalfd) starts a leave: the slot says Leaving, the key checker waits
//! for a node that stays to take our key over (or unregisters it), then the watchdog is
//! disarmed and [`Daemon::run`] returns. SIGHUP re-executes the daemon in place, right after a
//! feed and only while healthy (the operator's rare path, which may log and allocate).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchdog::{ArmOptions, Modprobe, Policy, Roots, Watchdog, WatchdogDevice};

use crate::channel::{DaemonChannel, Shared};
use crate::config::{Config, WatchdogPolicy};
use crate::health::{decide, Inputs, Reason, Verdict};
use crate::keycheck::{self, CheckerConfig, KeyChecker, KeyWatch, LunBoard, Peers};
use crate::luns;
use crate::notify::Notifier;
use crate::storage::{Storage, SystemStorage};
use crate::vdisk::{
    self, BootId, Marker, NodeName, OpenOptions, QuorumView, SelfFenceCause, SlotBlock, SlotState,
    VotingDisks,
};

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// This node is fenced and has not rebooted since.
    #[error("this node ({node}) is marked dead by the voting-disk authority (epoch {epoch}, issued by node id {issuer}) and has not rebooted since its fence (or its slot does not say): reboot it, and fenced then waits for the cluster to let it back in")]
    MarkedDead {
        /// This node.
        node: String,
        /// Authority epoch.
        epoch: u64,
        /// Issuer slot.
        issuer: u8,
    },
    /// Stopped (SIGTERM, SIGINT) while waiting to be let back in: nothing was registered.
    #[error("stopped while waiting to be let back in; no key was registered")]
    Stopped,
    /// Any other start-up failure, with what to do.
    #[error("{0}")]
    Failed(String),
}

/// The boot a node marked dead was fenced in, from its slot's last block (`boot`, and
/// `fenced_boot` if a daemon already waited to be let back in): the fenced boot if set, else
/// the boot of the last write; when the slot records neither (a fenced that predates the
/// fields, a slot never written), the current boot, so that one more reboot is needed.
pub fn fenced_in(last_boot: BootId, last_fenced_boot: BootId, current: BootId) -> BootId {
    if !last_fenced_boot.is_nil() {
        last_fenced_boot
    } else if !last_boot.is_nil() {
        last_boot
    } else {
        current
    }
}

/// Waits, marked dead, until the authority lets this node back in: READY=1 (so that the
/// clusterware, which requires fenced, starts and can ask for it), a heartbeat in our slot every
/// P carrying the rejoin evidence (state joining, this boot, the boot it was fenced in), no key
/// registered and no watchdog armed. Returns once a majority round no longer marks this node
/// dead; a stop ends the wait.
fn wait_to_be_let_back(
    config: &Config,
    disks: &mut VotingDisks,
    view: &mut QuorumView,
    block: &mut SlotBlock,
    signals: &nix::sys::signalfd::SignalFd,
    notifier: &Notifier,
) -> Result<(), StartError> {
    let epoch = view.authority().map_or(0, |a| a.marker.epoch);
    tracing::warn!(
        node = %config.me.name,
        epoch,
        boot = %block.boot,
        fenced_in = %block.fenced_boot,
        "marked dead by the voting-disk authority; this node has rebooted since its fence: waiting to be let back in (the cluster's unfencing, fence_fenced on, or `fenced clear` on a live node); no key is registered until then"
    );
    let _ = notifier.status(format_args!(
        "fenced out (marked dead at epoch {epoch}), rebooted since: waiting to be let back in"
    ));
    let _ = notifier.ready();
    let mut write_failed = false;
    loop {
        block.heartbeat_seq = view.next_own_seq();
        block.heartbeat_mono_ms = vdisk::mono_ms();
        if let Some(a) = view
            .authority()
            .filter(|a| a.marker.key() > block.marker.key())
        {
            block.marker = a.marker;
        }
        // Alive and doing what it should: systemd's watchdog (WatchdogSec=) is fed; no hardware
        // watchdog is armed yet.
        let _ = notifier.watchdog();
        match disks.write_own_slot(block) {
            Ok(_) => write_failed = false,
            Err(e) if !write_failed => {
                write_failed = true;
                tracing::warn!(error = %e, "waiting to be let back in: writing our slot failed; retried every poll period");
            }
            Err(_) => {}
        }
        let next = Instant::now() + config.timing.poll;
        while Instant::now() < next {
            match signal(signals) {
                Some(nix::sys::signal::Signal::SIGHUP) => tracing::info!(
                    "reload asked while waiting to be let back in: nothing to hand over; ignored"
                ),
                Some(_) => return Err(StartError::Stopped),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let round = disks.poll_round();
        view.update(round, Instant::now());
        if let Some(d) = view.duplicate_own_slot() {
            return Err(StartError::Failed(format!(
                "another daemon (incarnation {:#x}, node name {}) writes this node's voting-disk slot: two nodes share one slot, or fenced runs twice on this node",
                d.incarnation, d.node_name
            )));
        }
        if view.has_read_majority() && !view.self_dead() {
            let epoch = view.authority().map_or(0, |a| a.marker.epoch);
            tracing::warn!(node = %config.me.name, epoch, "let back in by the voting-disk authority: registering our key");
            let _ = notifier.status(format_args!("let back in at epoch {epoch}: registering"));
            return Ok(());
        }
    }
}

/// A transition the loop reports to the logging thread (Copy, so sending it never allocates).
#[derive(Debug, Clone, Copy)]
enum Event {
    Verdict(Verdict),
    Authority(Marker),
    Degraded(usize),
    FeedFailed(i32),
    /// A stop was asked for: the node leaves (with whether a live peer takes over).
    Leaving {
        live_peer: bool,
    },
}

/// The signals the loop acts on: SIGTERM and SIGINT stop the daemon (`systemctl stop`,
/// Ctrl-C), SIGHUP reloads it in place (`systemctl reload`). Blocked in every thread and read
/// by the loop through a signalfd, so no handler runs and nothing is interrupted.
fn control_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// A signal that arrived since the last call (a non-blocking read, no allocation).
fn signal(signals: &nix::sys::signalfd::SignalFd) -> Option<nix::sys::signal::Signal> {
    let info = signals.read_signal().ok()??;
    nix::sys::signal::Signal::try_from(i32::try_from(info.ssi_signo).ok()?).ok()
}

/// Everything the loop works with, set up by [`start`].
pub struct Daemon {
    config: Config,
    disks: VotingDisks,
    view: QuorumView,
    block: SlotBlock,
    /// Always `Some` while the loop runs (taken only to hand it over to a re-executed image).
    watchdog: Option<Watchdog>,
    watchdog_info: watchdog::WatchdogInfo,
    notifier: Notifier,
    watch: Arc<KeyWatch>,
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    board: Arc<LunBoard>,
    joined_at: Instant,
    signals: nix::sys::signalfd::SignalFd,
    _instance: nix::fcntl::Flock<std::fs::File>,
}

impl Daemon {
    /// What the control socket serves from.
    pub fn control_context(&self) -> crate::control::Context {
        crate::control::Context {
            config: self.config.clone(),
            storage: self.storage.clone(),
            board: self.board.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// Locks memory and shields the daemon from the OOM killer. Each step is best effort, with a
/// warning saying what it costs when it fails. (Real-time priority is the loop thread's alone:
/// see [`Daemon::run`].)
fn harden_process() {
    if let Err(e) = nix::sys::mman::mlockall(
        nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE,
    ) {
        tracing::warn!(error = %e, "mlockall failed: the loop may stall on page faults under memory pressure");
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", b"-1000") {
        tracing::warn!(error = %e, "cannot set oom_score_adj: the OOM killer may pick the daemon");
    }
}

/// Runs the start sequence.
pub fn start(config: Config) -> Result<Daemon, StartError> {
    let failed = StartError::Failed;
    // Every thread's stack is locked into memory (mlockall): keep the threads the daemon starts
    // (key check, control socket, a fence's parallel workers) small. Read by std at the first
    // spawn, so set before any.
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        std::env::set_var("RUST_MIN_STACK", "262144");
    }
    // Before any thread starts (threads inherit the mask): a stop is a leave the loop carries
    // out, never the default action's kill, which would leave the watchdog armed.
    control_signals()
        .thread_block()
        .map_err(|e| failed(format!("blocking SIGTERM, SIGINT and SIGHUP: {e}")))?;
    let signals = nix::sys::signalfd::SignalFd::with_flags(
        &control_signals(),
        nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )
    .map_err(|e| failed(format!("signalfd for SIGTERM, SIGINT and SIGHUP: {e}")))?;
    // A reload in place: take the armed watchdog over before anything slow (from the previous
    // image's last feed, this start must reach the loop within the watchdog timeout).
    let roots = Roots::system();
    let adopted = match crate::reload::Handover::take() {
        None => None,
        Some(Err(e)) => return Err(failed(e.to_string())),
        Some(Ok(h)) => {
            let info = watchdog::discover(&roots)
                .map_err(|e| failed(e.to_string()))?
                .into_iter()
                .find(|w| w.device_node == h.watchdog_device)
                .ok_or_else(|| {
                    failed(format!(
                        "reload: the watchdog {} handed over is not found",
                        h.watchdog_device.display()
                    ))
                })?;
            let wd = Watchdog::adopt(h.watchdog_fd, &info)
                .map_err(|e| failed(format!("reload: taking the watchdog over: {e}")))?;
            tracing::info!(watchdog = %h.watchdog_device.display(), "reloaded in place: took the armed watchdog over");
            Some((wd, info, h.incarnation))
        }
    };
    // Between the slow steps of a reload's start: the node was healthy when the previous image
    // handed over, and each step below re-checks what it depends on.
    let feed = |w: &Option<(Watchdog, watchdog::WatchdogInfo, u64)>| {
        if let Some((w, _, _)) = w {
            let _ = w.feed();
        }
    };
    let instance = crate::control::take_instance_lock(&config.control_socket).map_err(failed)?;
    // Before anything is armed: locking memory can take seconds on a large binary.
    harden_process();
    let notifier = Notifier::from_env().map_err(|e| failed(format!("NOTIFY_SOCKET: {e}")))?;
    feed(&adopted);
    if adopted.is_none() && !config.timing.startup_delay.is_zero() {
        tracing::info!(delay = ?config.timing.startup_delay, "start-up delay");
        std::thread::sleep(config.timing.startup_delay);
    }

    // The voting disks first: a fenced node must not register its key again.
    let mut disks = VotingDisks::open(
        &config.voting_disks,
        &OpenOptions {
            cluster: Some(config.cluster),
            ..OpenOptions::default()
        },
    )
    .map_err(|e| failed(format!("voting disks: {e}")))?;
    let header_timeouts = disks.header().timeouts;
    if header_timeouts != config.timing.as_header_timeouts() {
        return Err(failed(format!(
            "the [timeouts] of {} ({:?}) differ from those the voting disks were formatted with ({:?}): every node must use the same; make them equal",
            config.path.display(),
            config.timing.as_header_timeouts(),
            header_timeouts
        )));
    }
    // A reload keeps the incarnation: the slot keeps one writer.
    let incarnation = match &adopted {
        Some((_, _, incarnation)) => *incarnation,
        None => vdisk::random_u64().map_err(|e| failed(e.to_string()))?,
    };
    let mut view = QuorumView::new(
        disks.header(),
        disks.paths().len(),
        config.me.id,
        incarnation,
    );
    let round = disks.poll_round();
    view.update(round, Instant::now());
    if !view.has_read_majority() {
        return Err(failed(format!(
            "only {} of {} voting disks answered: a majority is needed to start; check their paths",
            round.answered_disks(),
            round.disk_count()
        )));
    }
    let boot = vdisk::current_boot().map_err(|e| {
        failed(format!(
            "reading this node's boot id (/proc/sys/kernel/random/boot_id): {e}"
        ))
    })?;
    let mut block = SlotBlock {
        cluster: config.cluster,
        slot: config.me.id,
        state: SlotState::Joining,
        node_name: NodeName::new(&config.me.name)
            .ok_or_else(|| failed("node name too long".into()))?,
        incarnation,
        heartbeat_seq: view.next_own_seq(),
        heartbeat_mono_ms: vdisk::mono_ms(),
        marker: view.authority().map(|a| a.marker).unwrap_or_default(),
        boot,
        fenced_boot: BootId::NIL,
    };
    let join_within = config.timing.lease;
    let join_pause = config.timing.poll / 4;
    if let Some(a) = view
        .authority()
        .copied()
        .filter(|a| a.marker.dead.contains(config.me.id))
    {
        let own = view.node(config.me.id);
        let fenced_in = fenced_in(
            own.map_or(BootId::NIL, |n| n.boot),
            own.map_or(BootId::NIL, |n| n.fenced_boot),
            boot,
        );
        // A reload's previous image ran in this boot and was healthy: this image was marked
        // dead meanwhile, and exits with the watchdog armed.
        if fenced_in == boot || adopted.is_some() {
            return Err(StartError::MarkedDead {
                node: config.me.name.clone(),
                epoch: a.marker.epoch,
                issuer: a.marker.issuer,
            });
        }
        block.fenced_boot = fenced_in;
        wait_to_be_let_back(
            &config, &mut disks, &mut view, &mut block, &signals, &notifier,
        )?;
        // The evidence goes before the key is registered: a fence from now on finds a slot
        // that says this boot may have had write access.
        block.fenced_boot = BootId::NIL;
        block.heartbeat_seq = view.next_own_seq();
        block.heartbeat_mono_ms = vdisk::mono_ms();
        join_slot(&mut disks, &block, join_within, join_pause, &|| {}).map_err(failed)?;
    }

    // After a clean leave our slot says Leaving, and the nodes that stay take over any key of
    // ours they find: say Joining first, and register only once a takeover decided on an
    // earlier read has had its time.
    if view.node(config.me.id).and_then(|n| n.state) == Some(SlotState::Leaving) {
        join_slot(&mut disks, &block, join_within, join_pause, &|| {
            feed(&adopted)
        })
        .map_err(failed)?;
        let quiet = config.timing.leave_quiet();
        tracing::info!(
            ?quiet,
            "rejoining after a clean leave: waiting before registering"
        );
        std::thread::sleep(quiet);
    }

    feed(&adopted);

    // Unfence. A path that does not answer leaves its LUN degraded (the key check retries it);
    // a LUN none of whose paths registers stops the start.
    let storage: Arc<dyn Storage> = Arc::new(SystemStorage);
    let paths = storage.paths(&config.luns);
    if paths.is_empty() && !config.luns.is_empty() {
        return Err(failed(format!(
            "no device matches storage.luns {:?}",
            config.luns
        )));
    }
    let io_timeout = config.timing.lease;
    let luns = luns::discover(&*storage, &paths, io_timeout)
        .usable()
        .map_err(|e| failed(e.to_string()))?;
    let reg = config.registration();
    let mut registered = Vec::new();
    for (lun, result) in luns::unfence(
        storage.clone(),
        &luns,
        reg,
        io_timeout,
        config.timing.fence_deadline,
    ) {
        match result {
            Ok(r) => {
                tracing::info!(lun = %lun, paths = r.paths, down = r.paths_down.len(), reserved = r.reserved, holder = ?r.holder, "registered");
                registered.extend(r.registered);
            }
            Err(e) => return Err(failed(format!("unfencing LUN {lun}: {e}"))),
        }
    }
    crate::storage::tell_multipathd_all(&config.luns);
    feed(&adopted);

    // Join our slot (a reload is joined already).
    if adopted.is_some() {
        block.state = SlotState::Joined;
    }
    block.heartbeat_seq = view.next_own_seq();
    block.heartbeat_mono_ms = vdisk::mono_ms();
    join_slot(&mut disks, &block, join_within, join_pause, &|| {
        feed(&adopted)
    })
    .map_err(failed)?;
    block.state = SlotState::Joined;

    // Arm the watchdog last: from here on a hang resets the node.
    let (watchdog, watchdog_info) = match adopted {
        Some((w, info, _)) => (w, info),
        None => arm_watchdog(&config, &roots).map_err(failed)?,
    };

    let shared = Shared::new();
    let watch = KeyWatch::new();
    let board = LunBoard::new(&luns);
    let checker = KeyChecker::new(
        storage.clone(),
        CheckerConfig {
            patterns: config.luns.clone(),
            reg,
            me: config.me.id,
            members: config.members.iter().map(|m| (m.id, m.key)).collect(),
            timeout: io_timeout,
            period: config.timing.key_check_period(),
            bound: config.timing.registration_bound(),
            key_loss: config.key_loss,
            handover: config.timing.handover(),
            luns_per_period: config.key_check_luns,
        },
        &luns,
        &registered,
        Box::new(DaemonChannel::new(shared.clone(), config.me.id)),
        watch.clone(),
        board.clone(),
    );
    keycheck::spawn(checker).map_err(|e| failed(format!("starting the key checker: {e}")))?;
    harden_process();
    Ok(Daemon {
        config,
        disks,
        view,
        block,
        watchdog: Some(watchdog),
        watchdog_info,
        notifier,
        watch,
        shared,
        storage,
        board,
        joined_at: Instant::now(),
        signals,
        _instance: instance,
    })
}

/// Writes our slot at start-up. A round that does not reach a majority (a voting disk slow on a
/// loaded host) is retried for up to `within`, each attempt bounded by D, `between` calling
/// `feed` (a reload's adopted watchdog); a block the disks refuse is not.
fn join_slot(
    disks: &mut VotingDisks,
    block: &SlotBlock,
    within: Duration,
    pause: Duration,
    between: &dyn Fn(),
) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        match disks.write_own_slot(block) {
            Ok(_) => return Ok(()),
            Err(e)
                if Instant::now() < until
                    && !matches!(e, vdisk::WriteError::InvalidBlock { .. }) =>
            {
                tracing::warn!(error = %e, "joining the voting disks: the write did not reach a majority; retrying");
                between();
                std::thread::sleep(pause);
            }
            Err(e) => return Err(format!("joining the voting disks: {e}")),
        }
    }
}

/// Selects the watchdog by the configured policy and arms it with the configured timeout.
fn arm_watchdog(
    config: &Config,
    roots: &Roots,
) -> Result<(Watchdog, watchdog::WatchdogInfo), String> {
    let policy = match (&config.watchdog_device, config.watchdog_policy) {
        (Some(d), _) => Policy::Device(d.clone()),
        (None, WatchdogPolicy::RequireHardware) => Policy::RequireHardware,
        (None, WatchdogPolicy::AllowSoftdog) => Policy::AllowSoftdog {
            soft_margin: u32::try_from(config.timing.watchdog.as_secs()).unwrap_or(60),
            soft_panic: false,
        },
    };
    let choice = watchdog::select(roots, &policy, &Modprobe::default(), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let watchdog = Watchdog::arm(
        &choice.device,
        &ArmOptions {
            timeout: u32::try_from(config.timing.watchdog.as_secs()).unwrap_or(u32::MAX),
            pretimeout: None,
            nowayout: false,
        },
        roots,
    )
    .map_err(|e| e.to_string())?;
    if u64::from(watchdog.timeout()) != config.timing.watchdog.as_secs() {
        return Err(format!(
            "{} applied a {} s timeout instead of {} s: set timeouts.watchdog to {} ms",
            choice.device.device_node.display(),
            watchdog.timeout(),
            config.timing.watchdog.as_secs(),
            u64::from(watchdog.timeout()) * 1000
        ));
    }
    tracing::info!(watchdog = %choice, timeout_s = watchdog.timeout(), "watchdog armed");

    Ok((watchdog, choice.device))
}

fn spawn_logger(rx: Receiver<Event>, node: String) {
    let _ = std::thread::Builder::new().name("log".into()).spawn(move || {
        for event in rx {
            match event {
                Event::Verdict(Verdict::Healthy) => tracing::info!(node = %node, "healthy: feeding the watchdog"),
                Event::Verdict(Verdict::Unhealthy(r)) => {
                    tracing::warn!(node = %node, reason = %r, "unhealthy: not feeding the watchdog")
                }
                Event::Verdict(Verdict::SelfFence(r)) => tracing::error!(node = %node, reason = %r, "fencing this node"),
                Event::Authority(m) => tracing::info!(
                    epoch = m.epoch,
                    issuer = m.issuer,
                    dead = ?m.dead.iter().collect::<Vec<_>>(),
                    "new voting-disk authority"
                ),
                Event::Degraded(0) => tracing::info!(node = %node, "every LUN confirmed through every path"),
                Event::Degraded(n) => tracing::warn!(node = %node, luns = n, "LUNs degraded (a path down, a LUN unreachable or recovering its PR state): reported, the watchdog is still fed; see `fenced status`"),
                Event::FeedFailed(errno) => tracing::error!(errno, "feeding the watchdog failed"),
                Event::Leaving { live_peer: true } => tracing::warn!(node = %node, "stop requested: leaving the cluster; a node that stays takes our key and reservations over, then the watchdog is disarmed"),
                Event::Leaving { live_peer: false } => tracing::warn!(node = %node, "stop requested: leaving the cluster; no other node is live, so our key is unregistered (the reservation is released), then the watchdog is disarmed"),
            }
        }
    });
}

impl Daemon {
    /// Sends READY=1 and runs the loop until a stop (SIGTERM, SIGINT) has been carried out as a
    /// leave (`Ok`), or until this node fences itself (it never returns then).
    pub fn run(mut self) -> std::io::Result<()> {
        let (events, rx): (SyncSender<Event>, Receiver<Event>) = sync_channel(64);
        spawn_logger(rx, self.config.me.name.clone());
        // Only this thread runs at real-time priority: threads inherit the policy, and a fence's
        // parallel workers at the loop's priority could starve it on a small machine.
        if let Err(e) = crate::rt::set_fifo(10) {
            tracing::warn!(error = %e, "cannot run the loop at SCHED_FIFO: CPU stress may delay it");
        }
        let _ = self.notifier.ready();
        let period = self.config.timing.poll;
        let lease = self.config.timing.lease;
        let max_lateness = lease.saturating_sub(period + self.config.timing.io_deadline);
        let mut last_verdict: Option<Verdict> = None;
        let mut last_degraded = 0usize;
        let mut last_authority = Marker::default();
        let mut next = Instant::now();
        // A stop: when it was asked for.
        let mut leaving: Option<Instant> = None;
        // A reload asked for (carried out right after a feed, when healthy).
        let mut reload = false;
        let leave_limit = self.config.timing.leave_limit();
        self.shared.loop_register();
        loop {
            // Sleep until the next round, or until a command hands us a marker to write.
            loop {
                let now = Instant::now();
                if now >= next || self.shared.loop_wanted() {
                    break;
                }
                std::thread::park_timeout(next - now);
            }
            let started = Instant::now();
            let scheduled = next.min(started);
            let lateness = started.saturating_duration_since(scheduled);

            let round = self.disks.poll_round();
            let read_at = Instant::now();
            self.view.update(round, read_at);
            let authority = self.view.authority().map(|a| a.marker).unwrap_or_default();
            let peers = Peers {
                leaving: self.view.leaving(),
                live: self.view.live_peer(read_at, lease),
                rebooted: self.view.rebooted(),
            };
            self.shared.loop_record_authority(
                authority,
                peers,
                started,
                self.view.has_read_majority(),
            );
            if authority != last_authority {
                last_authority = authority;
                let _ = events.try_send(Event::Authority(authority));
            }

            let requested = self
                .shared
                .loop_requested()
                .filter(|m| m.key() > authority.key());
            let got = signal(&self.signals);
            reload |= got == Some(nix::sys::signal::Signal::SIGHUP);
            let stop = matches!(
                got,
                Some(nix::sys::signal::Signal::SIGTERM | nix::sys::signal::Signal::SIGINT)
            );
            if leaving.is_none() && stop {
                // The checker first, then the slot: a node that stays removes our key only
                // after reading the slot, and the checker must take that for the leave it is.
                self.watch.start_leaving();
                self.block.state = SlotState::Leaving;
                leaving = Some(started);
                // The leave may take up to its limit: systemd must not kill the daemon (its
                // watchdog armed) before, whatever TimeoutStopSec says. A round's margin.
                let _ = self
                    .notifier
                    .stopping_within(leave_limit + self.config.timing.poll);
                let _ = self
                    .notifier
                    .status(format_args!("leaving the cluster (stop requested)"));
                let _ = events.try_send(Event::Leaving {
                    live_peer: peers.live,
                });
            }
            self.block.marker = requested.unwrap_or(authority);
            self.block.heartbeat_seq = self.view.next_own_seq();
            self.block.heartbeat_mono_ms = vdisk::mono_ms();
            let written = self.disks.write_own_slot(&self.block).is_ok();
            if let (true, Some(m)) = (written, requested) {
                self.shared.loop_published(m, Instant::now());
            }

            let verdict = decide(&Inputs {
                now: Instant::now(),
                joined_at: self.joined_at,
                lease,
                last_majority: self.view.majority_age(read_at).map(|age| read_at - age),
                read_majority: self.view.has_read_majority(),
                marked_dead: self.view.self_dead(),
                duplicate_slot: self.view.duplicate_own_slot().is_some(),
                heartbeat_written: written,
                key_lost: self.watch.lost(),
                lateness,
                max_lateness,
            });
            self.shared.loop_record_verdict(verdict);
            match verdict {
                Verdict::Healthy => {
                    if let Some(Err(e)) = self.watchdog.as_ref().map(|w| w.feed()) {
                        let _ = events.try_send(Event::FeedFailed(e as i32));
                    }
                    let _ = self.notifier.watchdog();
                }
                Verdict::Unhealthy(_) => {}
                Verdict::SelfFence(reason) => return Err(self.fence_self(reason)),
            }
            if std::mem::take(&mut reload) {
                // Rare and asked for by the operator: this path may log and allocate.
                if leaving.is_some() {
                    tracing::warn!("reload ignored: the daemon is leaving the cluster");
                } else if verdict != Verdict::Healthy {
                    tracing::warn!(?verdict, "reload refused while the node is not healthy: ask again once `fenced status` says ok");
                } else {
                    let e = self.reexec();
                    tracing::error!(error = %e, "reload failed: the daemon goes on as it was");
                }
            }
            if let Some(since) = leaving {
                if self.watch.has_left() || started.saturating_duration_since(since) >= leave_limit
                {
                    return self.finish_leave(since);
                }
            }
            let degraded = self.watch.degraded();
            if last_verdict != Some(verdict) || degraded != last_degraded {
                if last_verdict != Some(verdict) {
                    let _ = events.try_send(Event::Verdict(verdict));
                }
                if degraded != last_degraded {
                    let _ = events.try_send(Event::Degraded(degraded));
                }
                last_verdict = Some(verdict);
                last_degraded = degraded;
                let _ = self.notifier.status(format_args!(
                    "{}; epoch {}; {} of {} voting disks; {} LUN(s) degraded",
                    match verdict {
                        Verdict::Healthy => "healthy",
                        Verdict::Unhealthy(_) => "UNHEALTHY (watchdog not fed)",
                        Verdict::SelfFence(_) => "fencing itself",
                    },
                    authority.epoch,
                    round_answered(&self.disks),
                    self.disks.paths().len(),
                    degraded
                ));
            }
            next = scheduled + period;
            if next < Instant::now() {
                next = Instant::now() + period;
            }
            if requested.is_some() && !written {
                // Retry a requested marker soon rather than a whole period later.
                next = next.min(Instant::now() + period / 4);
            }
        }
    }

    /// The end of a clean stop: the slot says we left (its heartbeat stops from here), and the
    /// watchdog is disarmed by magic close, so the node keeps running without fenced.
    fn finish_leave(mut self, since: Instant) -> std::io::Result<()> {
        let complete = self.watch.has_left();
        self.block.heartbeat_seq = self.view.next_own_seq();
        self.block.heartbeat_mono_ms = vdisk::mono_ms();
        if let Err(e) = self.disks.write_own_slot(&self.block) {
            tracing::warn!(error = %e, "the last write of our slot (leaving) failed; the nodes that stay read the earlier one");
        }
        let took_ms = since.elapsed().as_millis();
        if !complete {
            tracing::error!(took_ms, "leaving took longer than its limit: stopping with our key possibly still on some LUNs (see the warnings above); the nodes that stay remove it");
        }
        let Daemon {
            watchdog, notifier, ..
        } = self;
        let disarmed = match watchdog {
            Some(w) => w.disarm().map_err(|e| e.to_string()),
            None => Err("it was handed to a failed reload".into()),
        };
        match disarmed {
            Ok(()) => {
                tracing::warn!(took_ms, "left the cluster: our key is off the shared LUNs and the watchdog is disarmed; the node keeps running without fencing");
                let _ = notifier.status(format_args!("left the cluster"));
                Ok(())
            }
            Err(e) => {
                let e = std::io::Error::other(format!(
                    "left the cluster, but the watchdog cannot be disarmed ({e}): it resets the node"
                ));
                let _ = notifier.status(format_args!("{e}"));
                Err(e)
            }
        }
    }

    /// Re-executes the daemon's binary in place (see [`crate::reload`]), right after a feed.
    /// Everything the new image would refuse at its start is checked here first, since a
    /// refusal there resets the node. Returns only if the exec did not happen; the watchdog is
    /// then this image's again.
    fn reexec(&mut self) -> std::io::Error {
        let other = |msg: String| std::io::Error::other(msg);
        let new = match Config::load_known_header(&self.config.path, self.disks.header().timeouts) {
            Ok(c) => c,
            Err(e) => return other(format!("the configuration does not load: {e}")),
        };
        if new.cluster != self.config.cluster
            || new.me.id != self.config.me.id
            || new.me.key != self.config.me.key
            || new.timing.as_header_timeouts() != self.disks.header().timeouts
        {
            return other("the configuration changes the cluster, this node's id or key, or the timeouts: those take a stop and a start".into());
        }
        let Some(program) = crate::reload::program() else {
            return other("cannot tell which binary to execute".into());
        };
        let Some(watchdog) = self.watchdog.take() else {
            return other("no watchdog to hand over".into());
        };
        let (fd, device) = match watchdog.keep_across_exec() {
            Ok(kept) => kept,
            Err(e) => {
                let msg = e.error.to_string();
                self.watchdog = Some(*e.watchdog);
                return other(format!("keeping the watchdog open across the exec: {msg}"));
            }
        };
        let handover = crate::reload::Handover {
            watchdog_fd: fd,
            watchdog_device: device,
            incarnation: self.block.incarnation,
        };
        tracing::warn!(program = %program.display(), luns = self.board.luns().len(), "reload: re-executing in place; the watchdog stays armed and the new image takes it over");
        let _ = self.notifier.status(format_args!("reloading"));
        let error = crate::reload::exec(&program, &handover);
        // Still this image: take the watchdog back.
        match Watchdog::adopt(fd, &self.watchdog_info) {
            Ok(w) => self.watchdog = Some(w),
            Err(e) => {
                tracing::error!(error = %e, "the watchdog cannot be taken back after the failed exec: it resets the node")
            }
        }
        error
    }

    fn fence_self(mut self, reason: Reason) -> std::io::Error {
        // Stop feeding first (we simply never feed again), then leave a trace on the voting
        // disks for the operator, bounded by the round deadline like every write.
        self.block.state = SlotState::SelfFenced(match reason {
            Reason::MarkedDead => SelfFenceCause::MarkedDead,
            Reason::KeyGone { .. } => SelfFenceCause::KeyGone,
            Reason::LeaseExpired => SelfFenceCause::LeaseExpired,
            Reason::DuplicateSlot => SelfFenceCause::DuplicateSlot,
            Reason::LoopLate => SelfFenceCause::LoopLate,
            _ => SelfFenceCause::Unrecorded,
        });
        self.block.heartbeat_seq = self.view.next_own_seq();
        let _ = self.disks.write_own_slot(&self.block);
        let _ = self
            .notifier
            .status(format_args!("fencing this node: {reason}"));
        let error = crate::selffence::fence_self(self.config.self_fence, reason);
        // Still here: the reset did not happen. Keep the watchdog open and unfed: it resets us.
        tracing::error!(error = %error, "self-fence action failed; waiting for the watchdog");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn round_answered(disks: &VotingDisks) -> usize {
    disks.last_round().answered_disks()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BootId {
        BootId([n; 16])
    }

    #[test]
    fn the_boot_a_node_was_fenced_in_is_its_slots_fenced_boot_then_its_last_boot_then_this_one() {
        // Waited before (in boot 2, fenced in boot 1), now in boot 3: still fenced in boot 1.
        assert_eq!(fenced_in(b(2), b(1), b(3)), b(1));
        // The last write was a member's in boot 1.
        assert_eq!(fenced_in(b(1), b(0), b(3)), b(1));
        // Restarted in the boot it was fenced in: no reboot since.
        assert_eq!(fenced_in(b(3), b(0), b(3)), b(3));
        // Nothing recorded (an older fenced, a slot never written): one more reboot needed.
        assert_eq!(fenced_in(b(0), b(0), b(3)), b(3));
    }
}
