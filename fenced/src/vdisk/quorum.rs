//! Authority computation: which fence event the cluster agreed on. Pure, no I/O, no allocation.
//!
//! A disk *carries* a marker when at least one valid slot block on it holds exactly that marker
//! (epoch, generation, dead bitmap and issuer all equal). The authority is the marker with the
//! highest (epoch, generation) that a strict majority of the *configured* disks carry; missing,
//! unreadable and corrupt disks count against the majority, never for it. A newer marker that has
//! not reached a majority yet (a fence in flight) does not win, and can never be beaten by an
//! older one once it has.

use std::cmp::Ordering;

use super::format::Marker;

/// One (disk, marker) pair read in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Index of the voting disk in the configured list.
    pub disk: u8,
    /// A marker found in a valid slot block on that disk.
    pub marker: Marker,
}

/// The marker the majority agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority {
    /// The agreed fence event.
    pub marker: Marker,
    /// How many disks carry it.
    pub disks: u8,
}

/// Result of [`compute_authority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthorityOutcome {
    /// The winning marker, if any marker is on a majority.
    pub authority: Option<Authority>,
    /// Two different markers with the same (epoch, generation) both reached a majority: two
    /// issuers reused one generation. The winner is still chosen deterministically (more disks,
    /// then lower issuer and bitmap), but this is a protocol bug to log loudly.
    pub conflict: bool,
}

/// Smallest number of disks that is a strict majority of `total`.
pub fn majority(total: usize) -> usize {
    total / 2 + 1
}

fn order(a: &Observation, b: &Observation) -> Ordering {
    b.marker
        .key()
        .cmp(&a.marker.key())
        .then(a.marker.issuer.cmp(&b.marker.issuer))
        .then(a.marker.dead.cmp(&b.marker.dead))
        .then(a.disk.cmp(&b.disk))
}

fn same_marker(a: &Marker, b: &Marker) -> bool {
    a == b
}

/// Computes the authority over `total_disks` configured disks from the markers read this round.
///
/// `observations` is scratch: it is sorted in place (no allocation). Markers with epoch 0 (no
/// fence event) are ignored; duplicate (disk, marker) pairs count once.
pub fn compute_authority(total_disks: usize, observations: &mut [Observation]) -> AuthorityOutcome {
    observations.sort_unstable_by(order);
    let needed = majority(total_disks);
    let mut best: Option<Authority> = None;
    let mut conflict = false;
    let mut i = 0;
    while i < observations.len() {
        let marker = observations[i].marker;
        let mut disks = 0usize;
        let mut last_disk = None;
        let mut j = i;
        while j < observations.len() && same_marker(&observations[j].marker, &marker) {
            if last_disk != Some(observations[j].disk) {
                disks += 1;
                last_disk = Some(observations[j].disk);
            }
            j += 1;
        }
        i = j;
        if !marker.is_present() || disks < needed {
            continue;
        }
        let disks = u8::try_from(disks).unwrap_or(u8::MAX);
        match best {
            None => best = Some(Authority { marker, disks }),
            Some(b) if b.marker.key() == marker.key() => {
                conflict = true;
                if disks > b.disks {
                    best = Some(Authority { marker, disks });
                }
            }
            // Sorted by key descending: every later group is older than the winner.
            Some(_) => break,
        }
    }
    AuthorityOutcome {
        authority: best,
        conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdisk::format::DeadSet;
    use proptest::prelude::*;

    fn m(epoch: u64, generation: u64, issuer: u8, dead: u8) -> Marker {
        let mut d = DeadSet::default();
        d.insert(dead);
        Marker {
            epoch,
            generation,
            dead: d,
            issuer,
        }
    }

    fn obs(disk: u8, marker: Marker) -> Observation {
        Observation { disk, marker }
    }

    #[test]
    fn newer_on_minority_does_not_win() {
        let old = m(1, 0, 0, 2);
        let new = m(2, 0, 1, 0);
        let mut o = [obs(0, old), obs(1, old), obs(2, old), obs(0, new)];
        let out = compute_authority(3, &mut o);
        assert_eq!(out.authority.unwrap().marker, old);
        let mut o = [obs(0, old), obs(1, old), obs(0, new), obs(2, new)];
        assert_eq!(compute_authority(3, &mut o).authority.unwrap().marker, new);
    }

    #[test]
    fn same_disk_counts_once_and_missing_disks_count_against() {
        let a = m(5, 1, 0, 1);
        let mut o = [obs(0, a), obs(0, a), obs(0, a)];
        assert_eq!(compute_authority(3, &mut o).authority, None);
        let mut o = [obs(0, a), obs(1, a)];
        assert_eq!(compute_authority(4, &mut o).authority, None);
        assert!(compute_authority(3, &mut o).authority.is_some());
    }

    #[test]
    fn differing_bitmaps_are_different_markers() {
        let a = m(5, 1, 0, 1);
        let b = m(5, 1, 0, 2);
        let mut o = [obs(0, a), obs(1, b), obs(2, a)];
        assert_eq!(compute_authority(3, &mut o).authority.unwrap().marker, a);
        let mut o = [obs(0, a), obs(1, b), obs(2, Marker::default())];
        assert_eq!(compute_authority(3, &mut o).authority, None);
    }

    #[test]
    fn conflict_is_flagged() {
        let a = m(5, 1, 0, 1);
        let b = m(5, 1, 0, 2);
        let mut o = [obs(0, a), obs(1, a), obs(1, b), obs(2, b), obs(2, a)];
        let out = compute_authority(3, &mut o);
        assert!(out.conflict);
        assert_eq!(out.authority.unwrap().marker, a);
    }

    /// What one disk looks like in a round.
    #[derive(Debug, Clone)]
    enum DiskCase {
        Missing,
        Corrupt,
        Slots(Vec<Marker>),
    }

    fn marker_strategy() -> impl Strategy<Value = Marker> {
        (0u64..4, 0u64..3, 0u8..3, 0u8..3).prop_map(|(e, g, i, d)| m(e, g, i, d))
    }

    fn disk_strategy() -> impl Strategy<Value = DiskCase> {
        prop_oneof![
            1 => Just(DiskCase::Missing),
            1 => Just(DiskCase::Corrupt),
            4 => proptest::collection::vec(marker_strategy(), 0..6).prop_map(DiskCase::Slots),
        ]
    }

    fn disks_strategy() -> impl Strategy<Value = Vec<DiskCase>> {
        prop_oneof![Just(1usize), Just(3), Just(5)]
            .prop_flat_map(|n| proptest::collection::vec(disk_strategy(), n))
    }

    fn carriers(disks: &[DiskCase], marker: &Marker) -> usize {
        disks
            .iter()
            .filter(|d| matches!(d, DiskCase::Slots(s) if s.contains(marker)))
            .count()
    }

    proptest! {
        #[test]
        fn authority_is_on_a_majority_and_never_older_than_a_majority_marker(disks in disks_strategy()) {
            let n = disks.len();
            let mut o = Vec::new();
            for (i, d) in disks.iter().enumerate() {
                // Missing and corrupt disks contribute no observation at all.
                if let DiskCase::Slots(s) = d {
                    for mk in s {
                        o.push(obs(u8::try_from(i).unwrap(), *mk));
                    }
                }
            }
            let all: Vec<Marker> = o.iter().map(|x| x.marker).collect();
            let out = compute_authority(n, &mut o);
            let on_majority: Vec<Marker> = all
                .iter()
                .copied()
                .filter(|mk| mk.is_present() && carriers(&disks, mk) >= majority(n))
                .collect();
            match out.authority {
                None => prop_assert!(on_majority.is_empty()),
                Some(a) => {
                    prop_assert!(a.marker.is_present());
                    prop_assert!(carriers(&disks, &a.marker) >= majority(n));
                    prop_assert_eq!(usize::from(a.disks), carriers(&disks, &a.marker));
                    for other in &on_majority {
                        prop_assert!(other.key() <= a.marker.key(),
                            "older {:?} beat newer {:?}", a.marker, other);
                    }
                }
            }
        }
    }
}
