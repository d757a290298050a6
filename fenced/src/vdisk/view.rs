//! What a daemon decides on, derived from each poll round: liveness of every node, who is dead
//! per the authority, whether this node still reads a majority, and whether another daemon is
//! writing our own slot. Allocates only in [`QuorumView::new`].

use std::time::{Duration, Instant};

use super::format::{BootId, DeadSet, Header, NodeName, SlotState};
use super::quorum::Authority;
use super::uring::RoundReport;

/// Liveness of one slot as seen by this reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Slot index.
    pub slot: u8,
    /// Name of the last block read for this slot.
    pub node_name: Option<NodeName>,
    /// State of the last block read for this slot.
    pub state: Option<SlotState>,
    /// (incarnation, heartbeat sequence) of the freshest block read for this slot.
    pub heartbeat: Option<(u64, u64)>,
    /// Rounds since `heartbeat` last changed (0 in the round it changed).
    pub rounds_since_change: u64,
    /// This reader's CLOCK_MONOTONIC time when `heartbeat` last changed.
    pub last_change: Option<Instant>,
    /// The kernel boot of the last block read for this slot (nil: not recorded).
    pub boot: BootId,
    /// The last block's fenced boot: set only while the node waits to be let back in.
    pub fenced_boot: BootId,
}

impl NodeView {
    /// Whether the slot shows the node rebooted since its fence and waits to be let back in:
    /// its daemon wrote a fenced boot, and a different boot of its own (the rejoin evidence,
    /// fenced/docs/voting-disk-format.md).
    pub fn rebooted_since_fence(&self) -> bool {
        !self.fenced_boot.is_nil() && !self.boot.is_nil() && self.boot != self.fenced_boot
    }

    /// Time since the heartbeat last changed, on this reader's monotonic clock.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_change.map(|t| now.saturating_duration_since(t))
    }
}

/// Another daemon writes our slot: a configuration error (two nodes given one slot, or a
/// second daemon on this node). The node must stop taking part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateSlotUse {
    /// Disk index on which it was seen.
    pub disk: usize,
    /// The other writer's incarnation.
    pub incarnation: u64,
    /// The other writer's heartbeat sequence.
    pub heartbeat_seq: u64,
    /// The other writer's node name.
    pub node_name: NodeName,
}

/// Views maintained across rounds.
#[derive(Debug)]
pub struct QuorumView {
    own_slot: u8,
    own_incarnation: u64,
    nodes: Vec<NodeView>,
    /// Last (incarnation, seq) read in our slot, per disk.
    own_last: Vec<Option<(u64, u64)>>,
    own_seq_floor: u64,
    own_seq: u64,
    authority: Option<Authority>,
    read_majority: bool,
    last_majority: Option<Instant>,
    rounds: u64,
    duplicate: Option<DuplicateSlotUse>,
    /// A read-only watcher owns no slot: no duplicate-writer check.
    observer: bool,
}

impl QuorumView {
    /// A view for a node owning `own_slot` with this daemon's random `own_incarnation`.
    pub fn new(header: &Header, disks: usize, own_slot: u8, own_incarnation: u64) -> Self {
        QuorumView {
            own_slot,
            own_incarnation,
            nodes: (0..header.slots)
                .map(|slot| NodeView {
                    slot,
                    node_name: None,
                    state: None,
                    heartbeat: None,
                    rounds_since_change: 0,
                    last_change: None,
                    boot: BootId::NIL,
                    fenced_boot: BootId::NIL,
                })
                .collect(),
            own_last: vec![None; disks],
            own_seq_floor: 0,
            own_seq: 0,
            authority: None,
            read_majority: false,
            last_majority: None,
            rounds: 0,
            duplicate: None,
            observer: false,
        }
    }

    /// A view for a read-only watcher (`fenced disk watch`) that owns no slot: liveness,
    /// authority and majority as for a node, without the check for a second writer of an own
    /// slot. [`may_take_part`](Self::may_take_part) is always false.
    pub fn observer(header: &Header, disks: usize) -> Self {
        let mut view = QuorumView::new(header, disks, 0, 0);
        view.observer = true;
        view
    }

    /// Folds one round into the views. `now` is the reader's CLOCK_MONOTONIC time.
    pub fn update(&mut self, round: &RoundReport, now: Instant) {
        self.rounds += 1;
        self.read_majority = round.has_read_majority();
        if self.read_majority {
            self.last_majority = Some(now);
        }
        if let Some(new) = round.authority().authority {
            // The authority only moves forward: a round that misses the newest marker (a disk
            // set that lost a member, a lagging disk) never brings back an older one.
            match self.authority {
                Some(cur) if new.marker.key() <= cur.marker.key() => {}
                _ => self.authority = Some(new),
            }
        }
        let disks = round.disk_count();
        for slot in 0..round.slot_count() {
            let mut best: Option<super::format::SlotBlock> = None;
            for disk in 0..disks {
                if let Some(Ok(b)) = round.slot(disk, slot) {
                    if best.is_none_or(|x| b.heartbeat_seq > x.heartbeat_seq) {
                        best = Some(*b);
                    }
                }
            }
            let node = &mut self.nodes[usize::from(slot)];
            match best {
                Some(b) if node.heartbeat != Some((b.incarnation, b.heartbeat_seq)) => {
                    node.heartbeat = Some((b.incarnation, b.heartbeat_seq));
                    node.node_name = Some(b.node_name);
                    node.state = Some(b.state);
                    node.boot = b.boot;
                    node.fenced_boot = b.fenced_boot;
                    node.rounds_since_change = 0;
                    node.last_change = Some(now);
                }
                _ => node.rounds_since_change = node.rounds_since_change.saturating_add(1),
            }
        }
        if !self.observer {
            self.check_own_slot(round);
        }
    }

    fn check_own_slot(&mut self, round: &RoundReport) {
        for disk in 0..round.disk_count() {
            let Some(Ok(b)) = round.slot(disk, self.own_slot) else {
                continue;
            };
            self.own_seq_floor = self.own_seq_floor.max(b.heartbeat_seq);
            let seen = (b.incarnation, b.heartbeat_seq);
            let prev = self.own_last[disk].replace(seen);
            if b.incarnation == self.own_incarnation || self.duplicate.is_some() {
                continue;
            }
            // A foreign incarnation in our slot is only evidence of a second writer when it
            // changed under our eyes: it replaced our own block, or it advanced. A stale block
            // of our previous incarnation, unchanged since start-up, is not.
            let changed = match prev {
                None => false,
                Some(p) => p != seen,
            };
            if changed {
                tracing::error!(
                    disk,
                    slot = self.own_slot,
                    other_incarnation = b.incarnation,
                    other_node = %b.node_name,
                    "another daemon is writing this node's voting-disk slot: two nodes share one slot, or fenced runs twice on this node; stop one and fix the slot configuration"
                );
                self.duplicate = Some(DuplicateSlotUse {
                    disk,
                    incarnation: b.incarnation,
                    heartbeat_seq: b.heartbeat_seq,
                    node_name: b.node_name,
                });
            }
        }
    }

    /// Liveness of every slot.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Liveness of one slot.
    pub fn node(&self, slot: u8) -> Option<&NodeView> {
        self.nodes.get(usize::from(slot))
    }

    /// The newest authority seen so far (never moves backwards).
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// Whether the authority declares `slot` dead.
    pub fn is_dead(&self, slot: u8) -> bool {
        self.authority.is_some_and(|a| a.marker.dead.contains(slot))
    }

    /// Whether the authority declares this node dead: it must fence itself. Never true for an
    /// [`observer`](Self::observer).
    pub fn self_dead(&self) -> bool {
        !self.observer && self.is_dead(self.own_slot)
    }

    /// Whether the last round read a majority of the disks.
    pub fn has_read_majority(&self) -> bool {
        self.read_majority
    }

    /// Time since the last round that read a majority (compare with the lease).
    pub fn majority_age(&self, now: Instant) -> Option<Duration> {
        self.last_majority.map(|t| now.saturating_duration_since(t))
    }

    /// Set once another incarnation was seen writing our slot; sticky until restart.
    pub fn duplicate_own_slot(&self) -> Option<&DuplicateSlotUse> {
        self.duplicate.as_ref()
    }

    /// Whether this node may write its slot and count as a member: it reads a majority, is not
    /// dead per the authority, and is the only writer of its slot.
    pub fn may_take_part(&self) -> bool {
        !self.observer && self.read_majority && !self.self_dead() && self.duplicate.is_none()
    }

    /// The heartbeat sequence for the next own-slot write: above anything read in our slot.
    pub fn next_own_seq(&mut self) -> u64 {
        self.own_seq = self.own_seq.max(self.own_seq_floor).saturating_add(1);
        self.own_seq
    }

    /// The other slots whose last block says the node leaves or has left (a clean stop).
    pub fn leaving(&self) -> DeadSet {
        self.others_where(|n| n.state == Some(SlotState::Leaving))
    }

    /// The other slots whose view satisfies `pred`.
    fn others_where(&self, pred: impl Fn(&NodeView) -> bool) -> DeadSet {
        let mut set = DeadSet::default();
        for n in self
            .nodes
            .iter()
            .filter(|n| n.slot != self.own_slot && pred(n))
        {
            set.insert(n.slot);
        }
        set
    }

    /// The other slots that show their node rebooted since its fence
    /// ([`NodeView::rebooted_since_fence`]).
    pub fn rebooted(&self) -> DeadSet {
        self.others_where(NodeView::rebooted_since_fence)
    }

    /// Whether another node is joined with a heartbeat that changed within `lease` of `now`
    /// (one that can take over this node's reservations when it leaves).
    pub fn live_peer(&self, now: Instant, lease: Duration) -> bool {
        self.nodes.iter().any(|n| {
            n.slot != self.own_slot
                && n.state == Some(SlotState::Joined)
                && n.age(now).is_some_and(|a| a < lease)
        })
    }

    /// Rounds folded in so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(boot: u8, fenced_boot: u8) -> NodeView {
        let id = |b: u8| BootId([b; 16]);
        NodeView {
            slot: 1,
            node_name: None,
            state: Some(SlotState::Joining),
            heartbeat: Some((1, 1)),
            rounds_since_change: 0,
            last_change: None,
            boot: id(boot),
            fenced_boot: id(fenced_boot),
        }
    }

    #[test]
    fn only_a_slot_with_a_fenced_boot_and_another_boot_shows_a_reboot_since_the_fence() {
        assert!(node(2, 1).rebooted_since_fence());
        // A daemon that never waited (no fenced boot), or waits in the boot it was fenced in.
        assert!(!node(2, 0).rebooted_since_fence());
        assert!(!node(1, 1).rebooted_since_fence());
        // A writer that records no boot proves nothing.
        assert!(!node(0, 1).rebooted_since_fence());
    }
}
