//! The changelog's records: a lead's state (key = lead id, value =
//! [`snapshot`] bytes) and a partition's checkpoint (key = empty, which no
//! lead id is): the watermark and the next input offsets the partition's
//! state reflects. Both are plain bytes in and out; reading and writing the
//! topic is [`super::restore`]'s and [`super::processor`]'s job.

use std::collections::BTreeMap;

use super::release::{Pos, Source};
use crate::engine::snapshot::{self, SnapshotError};
use crate::engine::Lead;
use crate::model::Model;
use crate::time::Micros;

/// The key of a partition's checkpoint record: empty, which no lead id is
/// (lead ids are required to be non-empty).
pub const CHECKPOINT_KEY: &[u8] = b"";

/// The checkpoint format's version byte.
const CHECKPOINT_V1: u8 = 1;

/// A partition's checkpoint: its watermark and the next input offsets that
/// its state reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub watermark: Micros,
    /// Next offset per input topic (by name), for the topics read so far.
    pub offsets: Vec<(String, i64)>,
    /// Re-keying's part, when the service re-keys.
    pub rekey: Option<RekeyCheckpoint>,
}

/// What re-keying keeps in a partition's checkpoint: the position of the
/// last record folded per source of its repartition partition (see
/// [`super::release`]), and the routing floor of each of its re-keyed
/// input partitions (see [`super::rekey::Merge`]). Not the marks read: a
/// restart reads the partition again from the oldest record waiting, and
/// the marks with it, in order (a mark promises only about the records
/// routed after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyCheckpoint {
    pub folded: BTreeMap<Source, Pos>,
    /// (input topic index, floor).
    pub floors: Vec<(u32, i64)>,
}

/// The byte that starts the re-keying section of a checkpoint.
const REKEY_SECTION: u8 = b'R';

impl Checkpoint {
    /// The next offset of `topic`, if the checkpoint has one.
    pub fn offset(&self, topic: &str) -> Option<i64> {
        self.offsets
            .iter()
            .find(|(name, _)| name == topic)
            .map(|&(_, o)| o)
    }
}

/// A changelog record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangelogError {
    #[error("corrupt checkpoint record: {0}")]
    CorruptCheckpoint(&'static str),
    #[error("lead state: {0}")]
    Lead(#[from] SnapshotError),
}

/// One record of the changelog, decoded.
#[derive(Debug)]
pub enum Record {
    Checkpoint(Checkpoint),
    Lead(Lead),
}

/// Decodes a changelog record (a record without a value is a deleted key,
/// which the caller skips).
pub fn decode(key: &[u8], value: &[u8], model: &Model) -> Result<Record, ChangelogError> {
    if key == CHECKPOINT_KEY {
        decode_checkpoint(value).map(Record::Checkpoint)
    } else {
        Ok(Record::Lead(snapshot::decode(value, model)?))
    }
}

/// A lead's state record value.
pub fn encode_lead(lead: &Lead, model: &Model, out: &mut Vec<u8>) {
    snapshot::encode(lead, model, out);
}

/// A checkpoint record value: the version, the watermark, then the next
/// offset of each input topic whose offset is known (`next[i] >= 0`).
pub fn encode_checkpoint(watermark: Micros, topics: &[String], next: &[i64]) -> Vec<u8> {
    encode_checkpoint_with(watermark, topics, next, None)
}

/// [`encode_checkpoint`] with re-keying's section after the offsets.
pub fn encode_checkpoint_with(
    watermark: Micros,
    topics: &[String],
    next: &[i64],
    rekey: Option<&RekeyCheckpoint>,
) -> Vec<u8> {
    let mut v = encode_offsets(watermark, topics, next);
    if let Some(r) = rekey {
        v.push(REKEY_SECTION);
        v.extend_from_slice(&(r.folded.len() as u16).to_le_bytes());
        for (source, &(offset, index)) in &r.folded {
            let (kind, topic, partition) = match *source {
                Source::Input(t, p) => (0u8, t, p),
                Source::SecondHop => (1, 0, 0),
                Source::Untagged => (2, 0, 0),
            };
            v.push(kind);
            v.extend_from_slice(&topic.to_le_bytes());
            v.extend_from_slice(&partition.to_le_bytes());
            v.extend_from_slice(&offset.to_le_bytes());
            v.extend_from_slice(&index.to_le_bytes());
        }
        v.extend_from_slice(&(r.floors.len() as u16).to_le_bytes());
        for &(topic, floor) in &r.floors {
            v.extend_from_slice(&topic.to_le_bytes());
            v.extend_from_slice(&floor.to_le_bytes());
        }
    }
    v
}

fn encode_offsets(watermark: Micros, topics: &[String], next: &[i64]) -> Vec<u8> {
    let mut v = vec![CHECKPOINT_V1];
    v.extend_from_slice(&watermark.to_le_bytes());
    let known: Vec<_> = topics.iter().zip(next).filter(|(_, &n)| n >= 0).collect();
    v.extend_from_slice(&(known.len() as u16).to_le_bytes());
    for (t, &n) in known {
        v.extend_from_slice(&(t.len() as u16).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
        v.extend_from_slice(&n.to_le_bytes());
    }
    v
}

/// Reads a checkpoint record value. Anything but a whole, well-formed
/// checkpoint is an error: a restore must not take a damaged one for "no
/// checkpoint" and re-read input its state already holds.
pub fn decode_checkpoint(b: &[u8]) -> Result<Checkpoint, ChangelogError> {
    let mut b = b;
    let version = take(&mut b, 1)?[0];
    if version != CHECKPOINT_V1 {
        return Err(ChangelogError::CorruptCheckpoint("unknown version"));
    }
    let watermark = i64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
    let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().expect("2 bytes"));
    let mut offsets = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().expect("2 bytes"));
        let topic = std::str::from_utf8(take(&mut b, usize::from(len))?)
            .map_err(|_| ChangelogError::CorruptCheckpoint("topic name is not UTF-8"))?
            .to_string();
        let off = i64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
        offsets.push((topic, off));
    }
    let mut rekey = None;
    if b.first() == Some(&REKEY_SECTION) {
        b = &b[1..];
        let mut r = RekeyCheckpoint::default();
        let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().expect("2 bytes"));
        for _ in 0..n {
            let kind = take(&mut b, 1)?[0];
            let topic = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
            let partition = i32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
            let offset = i64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
            let index = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
            let source = match kind {
                0 => Source::Input(topic, partition),
                1 => Source::SecondHop,
                2 => Source::Untagged,
                _ => return Err(ChangelogError::CorruptCheckpoint("unknown source kind")),
            };
            r.folded.insert(source, (offset, index));
        }
        let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().expect("2 bytes"));
        for _ in 0..n {
            let topic = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
            let floor = i64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
            r.floors.push((topic, floor));
        }
        rekey = Some(r);
    }
    if !b.is_empty() {
        return Err(ChangelogError::CorruptCheckpoint("trailing bytes"));
    }
    Ok(Checkpoint {
        watermark,
        offsets,
        rekey,
    })
}

/// The first `n` bytes of `b`, which moves past them.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], ChangelogError> {
    if b.len() < n {
        return Err(ChangelogError::CorruptCheckpoint("ends early"));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NO_TIME;

    fn topics() -> Vec<String> {
        vec!["events".into(), "crm".into()]
    }

    #[test]
    fn a_checkpoint_round_trips_byte_for_byte() {
        let bytes = encode_checkpoint(1_780_000_000_000_000, &topics(), &[42, 7]);
        let cp = decode_checkpoint(&bytes).unwrap();
        assert_eq!(
            cp,
            Checkpoint {
                watermark: 1_780_000_000_000_000,
                offsets: vec![("events".into(), 42), ("crm".into(), 7)],
                rekey: None,
            }
        );
        assert_eq!(cp.offset("crm"), Some(7));
        let names: Vec<String> = cp.offsets.iter().map(|(t, _)| t.clone()).collect();
        let next: Vec<i64> = cp.offsets.iter().map(|&(_, o)| o).collect();
        assert_eq!(encode_checkpoint(cp.watermark, &names, &next), bytes);
    }

    #[test]
    fn re_keyings_section_round_trips_and_is_checked_whole() {
        let r = RekeyCheckpoint {
            folded: [
                (Source::Input(0, 3), (17, 2)),
                (Source::Input(1, 0), (5, 0)),
                (Source::SecondHop, (16, 9)),
                (Source::Untagged, (3, 1)),
            ]
            .into_iter()
            .collect(),
            floors: vec![(0, 1_780_000_000_000), (1, i64::MIN)],
        };
        let bytes = encode_checkpoint_with(7, &topics(), &[42, 7], Some(&r));
        let cp = decode_checkpoint(&bytes).unwrap();
        assert_eq!(cp.rekey.as_ref(), Some(&r));
        assert_eq!(cp.offset("events"), Some(42));
        let plain = encode_checkpoint(7, &topics(), &[42, 7]);
        assert_eq!(&bytes[..plain.len()], &plain[..], "the section follows");
        for cut in plain.len() + 1..bytes.len() {
            assert!(decode_checkpoint(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_checkpoint_format_is_stable() {
        // Written by earlier versions into changelogs that must still restore.
        let bytes = encode_checkpoint(NO_TIME, &topics(), &[5, -1]);
        let mut expected = vec![1u8];
        expected.extend_from_slice(&NO_TIME.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 6, 0]);
        expected.extend_from_slice(b"events");
        expected.extend_from_slice(&5i64.to_le_bytes());
        assert_eq!(bytes, expected);
        let cp = decode_checkpoint(&bytes).unwrap();
        assert_eq!(cp.offset("crm"), None, "unread topics are left out");
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_absent() {
        let good = encode_checkpoint(99, &topics(), &[5, 6]);
        for cut in 0..good.len() {
            assert_eq!(
                decode_checkpoint(&good[..cut]),
                Err(ChangelogError::CorruptCheckpoint("ends early")),
                "cut at {cut}"
            );
        }
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(decode_checkpoint(&v2).is_err());
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            decode_checkpoint(&long),
            Err(ChangelogError::CorruptCheckpoint("trailing bytes"))
        );
        let mut bad_name = good;
        bad_name[13] = 0xff;
        assert_eq!(
            decode_checkpoint(&bad_name),
            Err(ChangelogError::CorruptCheckpoint("topic name is not UTF-8"))
        );
    }

    #[test]
    fn records_are_told_apart_by_their_key() {
        let model = std::sync::Arc::new(Model::default_model());
        let cp = encode_checkpoint(5, &topics(), &[1, 2]);
        assert!(matches!(
            decode(CHECKPOINT_KEY, &cp, &model),
            Ok(Record::Checkpoint(c)) if c.watermark == 5
        ));
        // A lead's state round-trips through the record form.
        let mut engine = crate::Engine::new(std::sync::Arc::clone(&model));
        let event = crate::codec::decode_json(
            br#"{"event_id":"e1","lead_id":"L-1","type":"demo_requested","occurred_at":"2026-03-02T14:00:00Z"}"#,
        )
        .unwrap();
        engine.fold(&event, &mut Vec::new());
        let lead = engine.lead("L-1").unwrap();
        let mut bytes = Vec::new();
        encode_lead(lead, &model, &mut bytes);
        let Ok(Record::Lead(back)) = decode(b"L-1", &bytes, &model) else {
            panic!("not a lead record")
        };
        let mut again = Vec::new();
        encode_lead(&back, &model, &mut again);
        assert_eq!(again, bytes);
        assert!(matches!(
            decode(b"L-1", &bytes[..bytes.len() / 2], &model),
            Err(ChangelogError::Lead(_))
        ));
    }
}
