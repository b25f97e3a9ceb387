//! The compact, versioned binary form of a lead's state, as kept in the
//! changelog topic (key = lead id, value = these bytes).
//!
//! Layout (version 1): version byte, the model's slot-layout id, then the
//! fields below. Times are varints relative to the lead's clock. Fit and
//! disqualification are not stored: they derive from the profile and are
//! recomputed on restore.

use super::lead::{flags, Lead, ProfileValue, NEVER, NO_TIME, RECENT_IDS};
use crate::change::Stage;
use crate::model::Model;
use crate::time::Micros;

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("lead state is truncated or corrupt ({0})")]
    Corrupt(&'static str),
    #[error("lead state has format version {0}; this build reads version {VERSION}")]
    Version(u8),
    #[error("lead state was written under a model with another rule layout; rebuild state from the input topics (see `leadscore replay`)")]
    Layout,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A time relative to the lead's clock; 0 encodes "none".
fn put_rel(out: &mut Vec<u8>, base: Micros, t: Micros) {
    if t == NO_TIME || t == NEVER {
        out.push(if t == NO_TIME { 0 } else { 1 });
    } else {
        put_varint(out, zigzag(t.wrapping_sub(base)) + 2);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends the lead's encoded state to `out`.
pub fn encode(lead: &Lead, model: &Model, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.extend_from_slice(&model.layout_id.to_le_bytes());
    put_bytes(out, lead.id_bytes());
    put_varint(out, zigzag(lead.time));
    put_rel(out, lead.time, lead.fresh_start);
    put_rel(out, lead.time, lead.stage_entered);
    put_rel(out, lead.time, lead.deadline);
    out.push(lead.stage as u8);
    out.push(lead.flags & !flags::DIRTY & !flags::PROFILE_CUSTOMER);
    put_varint(out, u64::from(lead.sequence));
    put_varint(out, u64::from(lead.criteria));
    // Contributions: a bitmap of the non-zero ones, then their f64 bits.
    let n = model.engagement_rules.len();
    let mut bitmap = vec![0u8; n.div_ceil(8)];
    for i in 0..n {
        if lead.slot(i) != 0 {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    for i in 0..n {
        if lead.slot(i) != 0 {
            out.extend_from_slice(&lead.slot(i).to_le_bytes());
        }
    }
    for i in n..model.slots {
        put_varint(out, zigzag(lead.slot(i) as i64));
    }
    out.push(lead.recent().len() as u8);
    out.push(lead.recent_pos);
    for f in lead.recent() {
        out.extend_from_slice(&f.to_le_bytes());
    }
    put_varint(out, lead.profile().count() as u64);
    for (k, v) in lead.profile() {
        put_bytes(out, k.as_bytes());
        match v {
            ProfileValue::Bool(b) => out.push(u8::from(b)),
            ProfileValue::Num(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            ProfileValue::Str(s) => {
                out.push(3);
                put_bytes(out, s.as_bytes());
            }
            ProfileValue::Other => out.push(4),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let (&first, rest) = self
            .b
            .split_first()
            .ok_or(SnapshotError::Corrupt("ends early"))?;
        self.b = rest;
        Ok(first)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.b.len() < n {
            return Err(SnapshotError::Corrupt("ends early"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u64_le(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(SnapshotError::Corrupt("varint too long"))
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| SnapshotError::Corrupt("length"))?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| SnapshotError::Corrupt("string is not UTF-8"))
    }

    fn rel(&mut self, base: Micros) -> Result<Micros, SnapshotError> {
        Ok(match self.varint()? {
            0 => NO_TIME,
            1 => NEVER,
            v => base.wrapping_add(unzigzag(v - 2)),
        })
    }
}

/// Decodes a lead's state written by [`encode`] under the same model layout.
pub fn decode(bytes: &[u8], model: &Model) -> Result<Lead, SnapshotError> {
    let mut r = Reader { b: bytes };
    let version = r.byte()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    if r.u64_le()? != model.layout_id {
        return Err(SnapshotError::Layout);
    }
    let id = r.str()?;
    let mut lead = Lead::new(id, model);
    lead.time = unzigzag(r.varint()?);
    lead.fresh_start = r.rel(lead.time)?;
    lead.stage_entered = r.rel(lead.time)?;
    lead.deadline = r.rel(lead.time)?;
    lead.stage = Stage::from_u8(r.byte()?).ok_or(SnapshotError::Corrupt("stage"))?;
    lead.flags = r.byte()? & (flags::DEAL_WON | flags::REJECTED_DISQ);
    lead.sequence = u32::try_from(r.varint()?).map_err(|_| SnapshotError::Corrupt("sequence"))?;
    lead.criteria = u32::try_from(r.varint()?).map_err(|_| SnapshotError::Corrupt("criteria"))?;
    let n = model.engagement_rules.len();
    let bitmap = r.take(n.div_ceil(8))?.to_vec();
    for i in 0..n {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            lead.set_slot(i, r.u64_le()?);
        }
    }
    for s in n..model.slots {
        lead.set_slot(s, unzigzag(r.varint()?) as u64);
    }
    let len = usize::from(r.byte()?);
    let pos = r.byte()?;
    if len > RECENT_IDS || usize::from(pos) >= RECENT_IDS.max(1) {
        return Err(SnapshotError::Corrupt("recent ids"));
    }
    let recent = (0..len)
        .map(|_| r.u64_le())
        .collect::<Result<Vec<_>, _>>()?;
    lead.set_recent(&recent, pos);
    let fields = r.varint()?;
    let mut profile = Vec::new();
    for _ in 0..fields {
        let k = r.str()?;
        let v = match r.byte()? {
            0 => ProfileValue::Bool(false),
            1 => ProfileValue::Bool(true),
            2 => ProfileValue::Num(f64::from_bits(r.u64_le()?)),
            3 => ProfileValue::Str(r.str()?),
            4 => ProfileValue::Other,
            _ => return Err(SnapshotError::Corrupt("profile value tag")),
        };
        profile.push((k, v));
    }
    lead.set_profile(&profile);
    if !r.b.is_empty() {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    lead.refresh_profile(model);
    Ok(lead)
}
