//! Forgetting leads: erasure on request (`lead_erased`, AVG/GDPR) and
//! retention of quiet leads (`[retention] inactive_after`).
//!
//! Removing a lead deletes its state: its position in the engine is freed
//! (and reused), its index entry and stage-index entry go, its linked
//! visitors go, and the changelog gets a tombstone for its key. Timer
//! entries of the freed position go stale and are skipped when they come
//! due, as moved timers are.
//!
//! An erasure leaves a **marker** instead of the lead: a keyed hash of the
//! id (SipHash-1-3, 128 bits; no profile data, and the id cannot be read
//! back from it), the erasure's time and the lead's last sequence number.
//! An event of the lead whose time is at most `retention.erasure_window`
//! after the erasure's is dropped (`Outcome::Erased`); a later one starts
//! a new lead whose sequence continues the former one's, so that its
//! change ids never repeat one of its former self's. Markers are kept for
//! that reason after the window (a few dozen bytes per erasure).

use fnv::FnvHashMap;
use prost::encoding::{decode_varint, encode_varint};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::lead::{flags, NEVER};
use super::snapshot::SnapshotError;
use super::{hash64, Engine, Outcome, Routed, StatusChange};
use crate::change::{ChangeKind, Score, Stage};
use crate::event::Event;
use crate::time::Micros;

/// What an erasure leaves of a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The latest erasure's time.
    pub erased_at: Micros,
    /// The lead's last sequence number when it was erased.
    pub sequence: u32,
}

/// The erasure markers of a partition, and the leads removed since the
/// changelog was last written.
#[derive(Debug, Default)]
pub(super) struct Forget {
    /// SipHash keys; see [`Engine::set_marker_key`].
    key: (u64, u64),
    pub(super) markers: FnvHashMap<u128, Marker>,
    /// Markers changed since the last drain.
    dirty: Vec<u128>,
    /// Ids of leads removed since the last drain (for tombstones), in order.
    pub(super) removed: Vec<Box<str>>,
    /// Events dropped because their lead was erased (cumulative).
    pub(super) dropped: u64,
    /// Whether visitors may live in other partitions' engines (the service
    /// re-keys): an erasure then sends a [`Routed::Unlink`] to each.
    unlink_elsewhere: bool,
    /// Those not yet sent.
    unlinks: Vec<Routed<'static>>,
}

impl Forget {
    fn hash(&self, id: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        std::hash::Hasher::write(&mut h, id.as_bytes());
        h.finish128().as_u128()
    }
}

/// Changelog key of an erasure marker: 0, `e`, the 16 bytes of the hash.
fn marker_key(hash: u128) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[1] = b'e';
    k[2..].copy_from_slice(&hash.to_be_bytes());
    k
}

const MARKER_VERSION: u8 = 1;

impl Engine {
    /// Sets the secret that keys the hash of erased ids in markers (the
    /// service's `erasure_key`). State written under one key is not
    /// recognised under another: set it before folding or restoring.
    pub fn set_marker_key(&mut self, secret: &str) {
        let h = hash64(secret.as_bytes());
        self.forget.key = (h, hash64(&h.to_le_bytes()));
    }

    /// Visitors may live in other partitions' engines (a service that
    /// re-keys): an erasure sends a [`Routed::Unlink`] to every partition
    /// ([`Engine::drain_unlinks`], and [`Engine::ingest`]'s `send`).
    pub fn unlink_elsewhere(&mut self, on: bool) {
        self.forget.unlink_elsewhere = on;
    }

    /// Moves the [`Routed::Unlink`]s of erasures folded since the last
    /// call to `send` (each for every partition: [`Routed::is_broadcast`]).
    pub fn drain_unlinks(&mut self, send: &mut Vec<Routed<'static>>) {
        if !self.forget.unlinks.is_empty() {
            send.append(&mut self.forget.unlinks);
        }
    }

    /// The erasure marker of this lead id, if it was erased.
    pub fn erased(&self, id: &str) -> Option<Marker> {
        if self.forget.markers.is_empty() {
            return None;
        }
        self.forget.markers.get(&self.forget.hash(id)).copied()
    }

    /// How many events were dropped because their lead had been erased.
    pub fn erased_events_dropped(&self) -> u64 {
        self.forget.dropped
    }

    /// How many erasure markers the engine holds.
    pub fn markers(&self) -> usize {
        self.forget.markers.len()
    }

    /// A new lead for an event at `t`, unless the id was erased within the
    /// window before `t` (`None`: drop the event). A lead that was erased
    /// longer ago continues its former sequence.
    #[inline]
    pub(super) fn create(&mut self, id: &str, hash: u32, t: Micros) -> Option<u32> {
        let mut sequence = 0;
        if !self.forget.markers.is_empty() {
            if let Some(m) = self.forget.markers.get(&self.forget.hash(id)) {
                if t <= m
                    .erased_at
                    .saturating_add(self.model.retention.erasure_window)
                {
                    self.forget.dropped += 1;
                    return None;
                }
                sequence = m.sequence;
            }
        }
        let idx = self.insert_new(id, hash);
        self.leads[idx as usize].sequence = sequence;
        Some(idx)
    }

    /// Folds a `lead_erased`: the lead's timers due by the erasure fire,
    /// then its state is deleted and its marker set. An erasure at or
    /// before one already folded for the id (a redelivery, or one about a
    /// former lead of the id) changes nothing.
    pub(super) fn erase(
        &mut self,
        event: &Event<'_>,
        hash: u32,
        out: &mut Vec<StatusChange>,
    ) -> Outcome {
        let t = event.occurred_at;
        let key = self.forget.hash(&event.lead_id);
        let before = self.forget.markers.get(&key).copied();
        if before.is_some_and(|m| t <= m.erased_at) {
            return Outcome::Duplicate;
        }
        let mut sequence = before.map_or(0, |m| m.sequence);
        if let Some(idx) = self.find_hashed(&event.lead_id, hash) {
            loop {
                let due = self.next_due(idx);
                if due > t || self.leads[idx as usize].is_vacant() {
                    break;
                }
                self.fire(idx, due, out);
            }
            let lead = &self.leads[idx as usize];
            if !lead.is_vacant() {
                sequence = lead.sequence;
                out.push(self.removal(idx, ChangeKind::LeadErased, t, Some(event)));
                self.remove(idx, hash);
                // Its linked visitors go with it (a scan of the partition's
                // visitors: erasures are rare), and, where visitors live
                // in other partitions' engines, theirs too (an `Unlink`
                // to every partition).
                let id = self.forget.removed.last().expect("just removed").clone();
                self.visitors.forget_lead(&id);
                if self.forget.unlink_elsewhere {
                    self.forget
                        .unlinks
                        .push(Routed::Unlink(event.clone().into_owned()));
                }
            }
        }
        self.forget.markers.insert(
            key,
            Marker {
                erased_at: t,
                sequence,
            },
        );
        self.forget.dirty.push(key);
        Outcome::Applied
    }

    /// Removes the lead at `idx` by retention at `due` (its timer).
    pub(super) fn expire(&mut self, idx: u32, due: Micros, out: &mut Vec<StatusChange>) {
        out.push(self.removal(idx, ChangeKind::LeadExpired, due, None));
        let hash = hash64(self.leads[idx as usize].id_bytes()) as u32;
        self.remove(idx, hash);
    }

    /// The status record of the lead's removal.
    fn removal(
        &self,
        idx: u32,
        kind: ChangeKind,
        at: Micros,
        cause: Option<&Event<'_>>,
    ) -> StatusChange {
        let lead = &self.leads[idx as usize];
        let suffix = if kind == ChangeKind::LeadErased {
            "erased"
        } else {
            "expired"
        };
        StatusChange {
            kind,
            change_id: format!("{}:{}:{suffix}", lead.id(), lead.sequence),
            lead_id: lead.id().to_string(),
            sequence: u64::from(lead.sequence),
            from: lead.stage,
            to: lead.stage,
            occurred_at: at,
            score: Score {
                total: 0.0,
                fit: 0.0,
                engagement: 0.0,
            },
            band: String::new(),
            reasons: cause
                .and_then(|e| e.reason.as_deref())
                .map(|r| vec![r.to_string()])
                .unwrap_or_default(),
            top_contributors: Vec::new(),
            route: None,
            follow_up_by: None,
            model_version: self.model.version.clone(),
            cause_event_id: cause.map(|e| e.event_id.to_string()),
        }
    }

    /// Deletes the lead at `idx` (whose id hashes to `hash`): its index
    /// and stage-index entries, its state. Its timer entries go stale and
    /// are dropped as they come due.
    fn remove(&mut self, idx: u32, hash: u32) {
        let lead = &self.leads[idx as usize];
        let id: Box<str> = lead.id().into();
        self.stages.moved(idx, lead.stage, Stage::Lead);
        self.index.remove(hash, idx);
        self.forget.removed.push(id);
        self.leads.vacate(idx as usize);
    }

    /// Removes a lead restored from an earlier changelog record whose key
    /// was later deleted (a tombstone read during a restore).
    pub fn drop_restored(&mut self, id: &str) {
        let hash = hash64(id.as_bytes()) as u32;
        if let Some(idx) = self.find_hashed(id, hash) {
            let lead = &self.leads[idx as usize];
            self.stages.moved(idx, lead.stage, Stage::Lead);
            self.index.remove(hash, idx);
            self.leads.vacate(idx as usize);
        }
    }

    /// Takes the ids of the leads removed since the last call, in order
    /// (each gets a tombstone in the changelog, and in the score topic).
    /// Call it before [`Engine::drain_dirty`]: a lead removed and started
    /// again in the same interval has its new state written after.
    pub fn drain_removed(&mut self, mut f: impl FnMut(&str)) {
        for id in self.forget.removed.drain(..) {
            f(&id);
        }
    }

    /// The ids of the leads removed since the last [`Engine::drain_removed`].
    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.forget.removed.iter().map(|s| &**s)
    }

    /// Takes the markers changed since the last call, as changelog records.
    pub(super) fn drain_markers(&mut self, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        if self.forget.dirty.is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut self.forget.dirty);
        keys.sort_unstable();
        keys.dedup();
        let mut buf = Vec::with_capacity(16);
        for k in keys {
            let m = self.forget.markers[&k];
            buf.clear();
            buf.push(MARKER_VERSION);
            encode_varint(super::snapshot::zigzag(m.erased_at), &mut buf);
            encode_varint(u64::from(m.sequence), &mut buf);
            f(&marker_key(k), Some(&buf));
        }
    }

    /// Puts a restored marker in place (changelog key `0 e <hash>`).
    pub(super) fn restore_marker(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let bad = SnapshotError::Corrupt("erasure marker");
        let hash: [u8; 16] = key
            .get(2..)
            .and_then(|k| k.try_into().ok())
            .ok_or(bad.clone())?;
        let mut b = value;
        if b.first() != Some(&MARKER_VERSION) {
            return Err(bad);
        }
        b = &b[1..];
        let erased_at = decode_varint(&mut b).map_err(|_| bad.clone())?;
        let sequence = decode_varint(&mut b).map_err(|_| bad.clone())?;
        if !b.is_empty() {
            return Err(bad);
        }
        self.forget.markers.insert(
            u128::from_be_bytes(hash),
            Marker {
                erased_at: super::snapshot::unzigzag(erased_at),
                sequence: u32::try_from(sequence).map_err(|_| bad)?,
            },
        );
        Ok(())
    }
}

/// When the lead expires by retention: `inactive_after` after its last
/// event, unless the model keeps customers and it is one.
#[inline]
pub(super) fn expiry(lead: &super::Lead, model: &crate::model::Model) -> Micros {
    match model.retention.inactive_after {
        Some(after)
            if !(model.retention.keep_customers
                && lead.flags & (flags::DEAL_WON | flags::PROFILE_CUSTOMER) != 0) =>
        {
            let last = lead.x().last_event;
            if last == super::NO_TIME {
                NEVER
            } else {
                last.saturating_add(after)
            }
        }
        _ => NEVER,
    }
}
