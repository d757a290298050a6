//! The two ways this node reads the authority and publishes its own markers
//! ([`crate::fence::MarkerChannel`]): through the running daemon's loop (which owns this node's
//! voting-disk slot), or directly on the disks when no daemon runs.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fence::MarkerChannel;
use crate::keycheck::Peers;
use crate::vdisk::{
    self, Marker, NodeName, OpenOptions, QuorumView, SlotBlock, SlotState, VotingDisks,
};

/// State shared between the daemon loop and the threads that serve commands. The loop only
/// ever `try_lock`s it, so a slow command can never stall the loop.
#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<SharedState>,
    changed: Condvar,
    /// The loop's thread, woken when a command hands it a marker so a fence does not wait for
    /// the next scheduled round.
    loop_thread: Mutex<Option<std::thread::Thread>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SharedState {
    /// The authority as the loop last computed it.
    authority: Marker,
    /// Rounds the loop has recorded.
    rounds: u64,
    /// When the last recorded round started, and whether it read a majority.
    round: Option<(Instant, bool)>,
    /// A command waits for a fresh round (the loop wakes for it as for a marker).
    want_round: bool,
    /// A marker a command wants written in our slot.
    request: Option<Marker>,
    /// The last requested marker that reached a majority, and when.
    published: Option<(Marker, Instant)>,
    /// The loop's last decision.
    verdict: Option<crate::health::Verdict>,
    /// The other nodes as the loop last read their slots.
    peers: Peers,
}

impl Shared {
    /// New shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    /// Loop side: record this round's authority and peers, when the round started and whether
    /// it read a majority (skipped if a command holds the lock).
    pub fn loop_record_authority(
        &self,
        authority: Marker,
        peers: Peers,
        started: Instant,
        majority: bool,
    ) {
        if let Ok(mut st) = self.state.try_lock() {
            st.authority = authority;
            st.peers = peers;
            st.round = Some((started, majority));
            st.rounds += 1;
            st.want_round = false;
            drop(st);
            self.changed.notify_all();
        }
    }

    /// Loop side: record this round's decision (skipped if a command holds the lock).
    pub fn loop_record_verdict(&self, verdict: crate::health::Verdict) {
        if let Ok(mut st) = self.state.try_lock() {
            st.verdict = Some(verdict);
        }
    }

    /// The authority the loop last recorded.
    pub fn latest_authority(&self) -> Marker {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .authority
    }

    /// The other nodes as the loop last read their slots.
    pub fn latest_peers(&self) -> Peers {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).peers
    }

    /// The loop's last decision.
    pub fn verdict(&self) -> Option<crate::health::Verdict> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).verdict
    }

    /// Loop side: register the calling thread as the loop, to be woken by requests.
    pub fn loop_register(&self) {
        *self.loop_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
    }

    /// Loop side: the marker a command asked for, if any.
    pub fn loop_requested(&self) -> Option<Marker> {
        self.state.try_lock().ok().and_then(|st| st.request)
    }

    /// Loop side: whether a command waits for a marker or for a fresh round. A command holding
    /// the lock counts as one that may: an early round costs a poll, a missed wake-up a period.
    pub fn loop_wanted(&self) -> bool {
        self.state
            .try_lock()
            .map_or(true, |st| st.request.is_some() || st.want_round)
    }

    fn wake_loop(&self) {
        if let Some(t) = &*self.loop_thread.lock().unwrap_or_else(|e| e.into_inner()) {
            t.unpark();
        }
    }

    /// Loop side: `marker` reached a majority now.
    pub fn loop_published(&self, marker: Marker, at: Instant) {
        // This one must not be lost: a command waits for it. The critical sections are a few
        // field copies, so the wait is bounded by them.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.request == Some(marker) {
            st.request = None;
        }
        st.published = Some((marker, at));
        drop(st);
        self.changed.notify_all();
    }
}

/// Publishes through the running daemon's loop.
pub struct DaemonChannel {
    shared: Arc<Shared>,
    me: u8,
}

impl DaemonChannel {
    /// A channel over the daemon's shared state, for the node in slot `me`.
    pub fn new(shared: Arc<Shared>, me: u8) -> Self {
        DaemonChannel { shared, me }
    }
}

impl DaemonChannel {
    /// The state of a round that started after this call: a command must never decide from a
    /// round older than its own request (a marker it just published would be missing).
    fn fresh_round(&mut self) -> Result<(Marker, Peers, Instant, bool), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        // The round in progress may have read the disks before this call: wait for the next.
        let target = st.rounds + 2;
        st.want_round = true;
        drop(st);
        self.shared.wake_loop();
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.rounds < target {
            let now = Instant::now();
            if now >= deadline {
                return Err("the daemon has not completed a voting-disk round in 10 s".into());
            }
            st.want_round = true;
            st = self
                .shared
                .changed
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            if st.rounds < target {
                drop(st);
                self.shared.wake_loop();
                st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
        let (started, majority) = st.round.unwrap_or((Instant::now(), false));
        Ok((st.authority, st.peers, started, majority))
    }
}

impl crate::luns::AuthoritySource for DaemonChannel {
    fn fresh(&mut self) -> Result<crate::luns::FreshAuthority, String> {
        let (marker, peers, round_started, majority) = self.fresh_round()?;
        Ok(crate::luns::FreshAuthority {
            round_started,
            majority,
            self_dead: marker.is_present() && marker.dead.contains(self.me),
            marker,
            leaving: peers.leaving,
        })
    }
}

impl crate::keycheck::AuthorityView for DaemonChannel {
    fn latest(&self) -> Marker {
        self.shared.latest_authority()
    }

    fn peers(&self) -> Peers {
        self.shared.latest_peers()
    }
}

impl MarkerChannel for DaemonChannel {
    fn authority(&mut self) -> Result<Marker, String> {
        let (marker, _, _, majority) = self.fresh_round()?;
        if !majority {
            return Err("the daemon's last voting-disk round had no read-majority".into());
        }
        Ok(marker)
    }

    fn rebooted(&self) -> vdisk::DeadSet {
        self.shared.latest_peers().rebooted
    }

    fn publish(&mut self, marker: Marker, deadline: Duration) -> Result<Instant, String> {
        let end = Instant::now() + deadline;
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request = Some(marker);
        loop {
            // Wake the loop with the lock released: it only try_locks, and a loop that wakes
            // while we hold the lock would not see the request and sleep a whole period. Woken
            // again every 50 ms until the marker is out.
            self.shared.wake_loop();
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((m, at)) = st.published {
                if m == marker {
                    return Ok(at);
                }
            }
            let now = Instant::now();
            if now >= end {
                st.request = None;
                return Err(format!(
                    "the marker (epoch {}) did not reach a majority of voting disks within {deadline:?}",
                    marker.epoch
                ));
            }
            drop(
                self.shared
                    .changed
                    .wait_timeout(st, (end - now).min(Duration::from_millis(50)))
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }
}

/// Publishes directly on the voting disks (no daemon runs on this node).
pub struct DiskChannel {
    disks: VotingDisks,
    view: QuorumView,
    block: SlotBlock,
}

impl DiskChannel {
    /// Opens the configured voting disks with a fresh incarnation for this node's slot.
    pub fn open(config: &Config) -> Result<DiskChannel, String> {
        let disks = VotingDisks::open(
            &config.voting_disks,
            &OpenOptions {
                cluster: Some(config.cluster),
                ..OpenOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let incarnation = vdisk::random_u64().map_err(|e| e.to_string())?;
        let view = QuorumView::new(
            disks.header(),
            disks.paths().len(),
            config.me.id,
            incarnation,
        );
        let block = SlotBlock {
            cluster: config.cluster,
            slot: config.me.id,
            state: SlotState::Free,
            node_name: NodeName::new(&config.me.name).ok_or("node name too long")?,
            incarnation,
            heartbeat_seq: 0,
            heartbeat_mono_ms: 0,
            marker: Marker::default(),
            // A command writes this node's boot and never the rejoin evidence: it can take the
            // evidence away (a daemon started later in this boot then refuses), never make it.
            boot: vdisk::current_boot().map_err(|e| format!("reading this node's boot id: {e}"))?,
            fenced_boot: vdisk::BootId::NIL,
        };
        Ok(DiskChannel { disks, view, block })
    }

    /// How long a command retries a round or a write that missed a majority (one slow round
    /// on a loaded host is not an answer), and the pause between tries: the lease L, and a
    /// tenth of the poll period (so stale buffers of a timed-out round can be reaped).
    fn retry_bounds(&self) -> (Duration, Duration) {
        let t = self.disks.header().timeouts;
        (
            Duration::from_millis(u64::from(t.lease_ms)),
            Duration::from_millis(u64::from(t.poll_ms / 10).max(10)),
        )
    }

    /// Reads rounds until one reaches a majority of voting disks, for up to the lease. Returns
    /// when the successful round started.
    fn poll(&mut self) -> Result<Instant, String> {
        let (limit, pause) = self.retry_bounds();
        let end = Instant::now() + limit;
        loop {
            let started = Instant::now();
            let round = self.disks.poll_round();
            let (answered, total) = (round.answered_disks(), round.disk_count());
            self.view.update(round, Instant::now());
            if self.view.has_read_majority() {
                return Ok(started);
            }
            if Instant::now() + pause >= end {
                return Err(format!(
                    "only {answered} of {total} voting disks answered (rounds retried for {limit:?}): no majority; check the voting disks' paths (`fenced doctor`)"
                ));
            }
            std::thread::sleep(pause);
        }
    }
}

impl crate::luns::AuthoritySource for DiskChannel {
    fn fresh(&mut self) -> Result<crate::luns::FreshAuthority, String> {
        let polled = self.poll();
        Ok(crate::luns::FreshAuthority {
            round_started: *polled.as_ref().unwrap_or(&Instant::now()),
            majority: polled.is_ok(),
            self_dead: self.view.self_dead(),
            marker: self.view.authority().map(|a| a.marker).unwrap_or_default(),
            leaving: self.view.leaving(),
        })
    }
}

impl MarkerChannel for DiskChannel {
    fn authority(&mut self) -> Result<Marker, String> {
        self.poll()?;
        Ok(self.view.authority().map(|a| a.marker).unwrap_or_default())
    }

    fn rebooted(&self) -> vdisk::DeadSet {
        self.view.rebooted()
    }

    fn publish(&mut self, marker: Marker, deadline: Duration) -> Result<Instant, String> {
        let end = Instant::now() + deadline;
        let (_, pause) = self.retry_bounds();
        self.poll()?;
        // Keep the state the slot had (a stopped daemon's Leaving or SelfFenced stays visible).
        if let Some(state) = self.view.node(self.block.slot).and_then(|n| n.state) {
            self.block.state = state;
        }
        self.block.marker = marker;
        // A write that missed a majority is tried again (each try a new sequence number) until
        // the deadline: the same block, so a partial write is only ever completed.
        loop {
            self.block.heartbeat_seq = self.view.next_own_seq();
            match self.disks.write_own_slot(&self.block) {
                Ok(_) => return Ok(Instant::now()),
                Err(e @ vdisk::WriteError::NoMajority { .. }) if Instant::now() + pause < end => {
                    tracing::debug!(error = %e, "marker write missed a majority: trying again");
                    std::thread::sleep(pause);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the daemon loop: rounds every `period`, or at once when a command waits.
    fn fake_loop(shared: Arc<Shared>, period: Duration, epoch: Arc<std::sync::atomic::AtomicU64>) {
        std::thread::spawn(move || {
            shared.loop_register();
            loop {
                let until = Instant::now() + period;
                while Instant::now() < until && !shared.loop_wanted() {
                    std::thread::park_timeout(until - Instant::now());
                }
                let marker = Marker {
                    epoch: epoch.load(std::sync::atomic::Ordering::SeqCst),
                    ..Marker::default()
                };
                if let Some(m) = shared.loop_requested() {
                    shared.loop_published(m, Instant::now());
                    epoch.store(m.epoch, std::sync::atomic::Ordering::SeqCst);
                }
                shared.loop_record_authority(marker, Peers::default(), Instant::now(), true);
            }
        });
    }

    #[test]
    fn a_command_reads_a_fresh_round_without_waiting_for_the_schedule() {
        let shared = Shared::new();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(3));
        fake_loop(shared.clone(), Duration::from_secs(30), epoch.clone());
        std::thread::sleep(Duration::from_millis(100));
        let mut ch = DaemonChannel::new(shared, 0);
        let t = Instant::now();
        assert_eq!(ch.authority().unwrap().epoch, 3);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "woke the loop instead of waiting 30 s"
        );
    }

    #[test]
    fn every_publish_wakes_the_loop_instead_of_waiting_for_the_schedule() {
        // A loop that wakes while the command still holds the lock must not miss the request
        // (it did in guests: a marker then waited a whole poll period).
        let shared = Shared::new();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        fake_loop(shared.clone(), Duration::from_secs(3600), epoch);
        let mut ch = DaemonChannel::new(shared, 0);
        for e in 1..=200 {
            let m = Marker {
                epoch: e,
                ..Marker::default()
            };
            ch.publish(m, Duration::from_secs(20))
                .expect("published without a scheduled round");
        }
    }

    #[test]
    fn the_authority_after_a_publish_includes_it() {
        let shared = Shared::new();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(3));
        fake_loop(shared.clone(), Duration::from_secs(30), epoch);
        let mut ch = DaemonChannel::new(shared, 0);
        let m = Marker {
            epoch: 4,
            ..Marker::default()
        };
        ch.publish(m, Duration::from_secs(5)).unwrap();
        // The round that published recorded the old authority; a fresh one sees the new.
        assert_eq!(ch.authority().unwrap().epoch, 4);
    }
}
