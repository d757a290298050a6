//! What every backend offers and reports, apart from any one of them: the operations
//! ([`PrOperation`], [`RegisterOptions`]), what a command went through ([`Report`],
//! [`Completed`]) and the trait the SG_IO and block-layer backends implement
//! ([`PersistentReservations`]). No module depends on a backend just for these types.

use serde::Serialize;

use crate::error::Result;
use crate::pr::{RegisteredKeys, ReservationStatus};
use crate::sense::Sense;
use crate::types::{PrType, ReservationKey};

/// What happened on the way to a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Commands sent (1 when nothing was retried).
    pub attempts: u32,
    /// Every UNIT ATTENTION absorbed, in order.
    pub unit_attentions: Vec<Sense>,
    /// PREEMPT AND ABORT was refused by the target and PREEMPT was sent instead.
    pub preempt_abort_fallback: bool,
}

impl Report {
    /// True when a UNIT ATTENTION said this initiator's registration or reservation was
    /// preempted or released by another initiator.
    pub fn saw_preemption(&self) -> bool {
        self.unit_attentions.iter().any(Sense::is_preemption_notice)
    }

    pub(crate) fn absorb(&mut self, other: Report) {
        self.attempts += other.attempts;
        self.unit_attentions.extend(other.unit_attentions);
        self.preempt_abort_fallback |= other.preempt_abort_fallback;
    }
}

/// A decoded reply plus the [`Report`] of how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Completed<T> {
    /// The decoded reply.
    pub value: T,
    /// Retries and unit attentions.
    pub report: Report,
}

/// Options of REGISTER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    /// REGISTER AND IGNORE EXISTING KEY (re-register after an I_T nexus change).
    pub ignore_existing: bool,
    /// APTPL: persist through power loss.
    pub aptpl: bool,
    /// ALL_TG_PT: register through every target port at once.
    pub all_target_ports: bool,
}

/// One operation, as the parallel and CLI layers describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrOperation {
    /// REGISTER / REGISTER AND IGNORE EXISTING KEY.
    Register {
        /// Current key (0 if none); ignored with `ignore_existing`.
        current: ReservationKey,
        /// New key (0 = unregister).
        new: ReservationKey,
        /// Options.
        options: RegisterOptions,
    },
    /// RESERVE.
    Reserve {
        /// Own key.
        key: ReservationKey,
        /// Type.
        pr_type: PrType,
    },
    /// RELEASE.
    Release {
        /// Own key.
        key: ReservationKey,
        /// Type.
        pr_type: PrType,
    },
    /// CLEAR.
    Clear {
        /// Own key.
        key: ReservationKey,
    },
    /// PREEMPT / PREEMPT AND ABORT.
    Preempt {
        /// Own key.
        own: ReservationKey,
        /// Victim's key.
        victim: ReservationKey,
        /// Type.
        pr_type: PrType,
        /// Abort the victim's outstanding commands.
        abort: bool,
    },
}

impl PrOperation {
    /// The same operation with PREEMPT AND ABORT turned into PREEMPT (the fallback for targets
    /// that lack it).
    pub fn without_abort(self) -> PrOperation {
        match self {
            PrOperation::Preempt {
                own,
                victim,
                pr_type,
                ..
            } => PrOperation::Preempt {
                own,
                victim,
                pr_type,
                abort: false,
            },
            other => other,
        }
    }
}

/// The reservation operations, implemented by SG_IO ([`PrDevice`]) and by the block layer
/// ([`crate::BlockPrDevice`]), so a daemon can hold either.
pub trait PersistentReservations: Send + Sync {
    /// Device name.
    fn device_name(&self) -> &str;
    /// Applies one PR OUT operation.
    fn apply(&self, op: PrOperation) -> Result<Report>;
    /// Registered keys.
    fn keys(&self) -> Result<Completed<RegisteredKeys>>;
    /// Current reservation.
    fn reservation(&self) -> Result<Completed<ReservationStatus>>;
    /// Registered keys, read to confirm a PR OUT took effect: [`keys`](Self::keys), unless
    /// the backend's own read is unavailable and it has another way to ask.
    fn keys_for_verification(&self) -> Result<Completed<RegisteredKeys>> {
        self.keys()
    }
}
