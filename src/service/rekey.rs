//! Re-keying: which repartition partition a key goes to, and the order in
//! which the re-keyed input partitions are routed. No I/O: the processor
//! feeds it and performs what it says.
//!
//! A lead's messages on a topic that is not keyed by lead are spread over
//! the topic's partitions. Routed partition after partition, they would
//! reach the lead out of order; routed in record-timestamp order across
//! the partitions this instance owns, as Kafka Streams merges the
//! partitions of a task, a topic written in order keeps its order. A
//! partition with nothing buffered holds the others back until it has a
//! message or is known to be at the end of its log (`idle` plays the role
//! of Kafka Streams' `max.task.idle.ms`).
//!
//! Even a topic keyed by another stable id needs this order: the events of
//! other leads move the watermark of the repartition partition a lead
//! shares with them, and one input partition running ahead would fire the
//! lead's timers before its own older events arrive.
//!
//! An empty partition is waited on from the moment another has a message:
//! for `idle` at least (producers do not append to all partitions at the
//! same instant), then until a check of the log's end offset against the
//! next offset the partition expects finds nothing more, as Kafka Streams
//! waits while a partition's lag is unknown or above zero. The checks are
//! the caller's, once per `idle` while the partition is waited on. One
//! whose end cannot be confirmed although its leader answers (a
//! transactionally written input, whose commit markers leave the end past
//! its last record) is waited on for [`IDLE_LIMIT`] idle periods at most,
//! and until half as many checks were answered: a leader that does not
//! answer (a broker down) is waited for, since passing its partition over
//! would route its older messages after newer ones of the others.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// An empty partition whose end is not confirmed holds the others back for
/// this many idle periods at most.
pub const IDLE_LIMIT: u32 = 20;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), the hash
/// of the Java clients' default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`, as the Java clients' default
/// partitioner picks it for a keyed record: `(murmur2(key) & 0x7fffffff) % n`.
/// A topic keyed by lead that the service also feeds through the
/// repartition topic must be partitioned this way (librdkafka clients:
/// `partitioner = murmur2_random`), or a lead's state would be split.
pub fn partition_for(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1) as u32) as i32
}

impl crate::config::Partitioner {
    /// The partition of `key` among `partitions`, as a producer with this
    /// partitioner places a keyed record.
    pub fn partition(self, key: &[u8], partitions: usize) -> i32 {
        match self {
            crate::config::Partitioner::Murmur2Random => partition_for(key, partitions),
            // librdkafka's `rd_kafka_msg_partitioner_consistent`: CRC-32 (the
            // zlib one) of the key, modulo the partition count.
            crate::config::Partitioner::ConsistentRandom => {
                (crc32fast::hash(key) % partitions.max(1) as u32) as i32
            }
        }
    }
}

/// A message of a re-keyed partition, copied out of the consumer's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffered {
    pub offset: i64,
    /// Record timestamp (ms); messages without one sort first.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Only for the topics whose format reads headers (CloudEvents).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A re-keyed input partition: (input topic index, partition).
pub type Lane = (usize, i32);

#[derive(Debug)]
struct LaneState {
    buf: VecDeque<Buffered>,
    paused: bool,
    /// The offset of the last message buffered since the reset.
    last: Option<i64>,
    /// Since when this lane, empty, holds back others that have messages.
    waiting: Option<Duration>,
    /// When a check made after the first idle period of the wait found
    /// nothing past what was buffered. It holds for one idle period: the
    /// log may grow again.
    confirmed: Option<Duration>,
    /// When its end was last checked.
    checked: Option<Duration>,
    /// The merge's push count when its end was confirmed: the confirmation
    /// vouches only for messages that had arrived by then (a message of
    /// another lane that arrives later may have been written with ones of
    /// this lane that the check could not see yet).
    confirmed_after: u64,
    /// The merge's push count of each buffered message.
    seqs: VecDeque<u64>,
    /// Checks answered with more in the log than was buffered, since the
    /// wait began.
    refused: u32,
    /// The lowest effective timestamp its next message may take: the
    /// running maximum of those routed, raised past a message routed
    /// while this lane was empty (a later one of its own ranks after it).
    floor: i64,
}

impl LaneState {
    fn new() -> LaneState {
        LaneState {
            buf: VecDeque::new(),
            paused: false,
            last: None,
            waiting: None,
            confirmed: None,
            checked: None,
            confirmed_after: 0,
            seqs: VecDeque::new(),
            refused: 0,
            floor: i64::MIN,
        }
    }
}

/// The re-keyed partitions an instance owns, merged in timestamp order.
#[derive(Debug)]
pub struct Merge {
    idle: Duration,
    /// Pause a partition's fetching with this many buffered; resume at half.
    bound: usize,
    lanes: BTreeMap<Lane, LaneState>,
    to_pause: Vec<Lane>,
    to_resume: Vec<Lane>,
    /// Messages pushed so far.
    pushed: u64,
}

impl Merge {
    pub fn new(idle: Duration, bound: usize) -> Merge {
        Merge {
            idle,
            bound: bound.max(2),
            lanes: BTreeMap::new(),
            to_pause: Vec::new(),
            to_resume: Vec::new(),
            pushed: 0,
        }
    }

    /// Starts (or restarts, after a rewind) a lane with nothing buffered,
    /// its effective timestamps at `floor` at least (from its checkpoint).
    pub fn reset(&mut self, lane: Lane, floor: i64) {
        let mut s = LaneState::new();
        s.floor = floor;
        let old = self.lanes.insert(lane, s);
        if old.is_some_and(|o| o.paused) {
            self.to_resume.push(lane);
        }
    }

    /// The lane's floor (for its checkpoint).
    pub fn floor(&self, lane: Lane) -> Option<i64> {
        self.lanes.get(&lane).map(|s| s.floor)
    }

    /// The lanes routed here.
    pub fn lanes(&self) -> impl Iterator<Item = Lane> + '_ {
        self.lanes.keys().copied()
    }

    /// Whether the lane has nothing buffered.
    pub fn lane_empty(&self, lane: Lane) -> bool {
        self.lanes.get(&lane).is_none_or(|s| s.buf.is_empty())
    }

    /// The lowest rank any message the lane routes from now on takes:
    /// (effective timestamp, offset); `unrouted` is the next offset when
    /// nothing is buffered.
    pub fn bound(&self, lane: Lane, unrouted: i64) -> Option<(i64, i64)> {
        let s = self.lanes.get(&lane)?;
        Some(match s.buf.front() {
            Some(m) => (m.timestamp.max(s.floor), m.offset),
            None => (s.floor, s.last.map_or(unrouted, |o| o + 1)),
        })
    }

    /// Forgets a partition's lanes (revoked); their buffered messages are
    /// dropped, to be read again by the partition's next owner.
    pub fn drop_partition(&mut self, partition: i32) {
        let gone: Vec<Lane> = self
            .lanes
            .keys()
            .filter(|l| l.1 == partition)
            .copied()
            .collect();
        for l in gone {
            if self.lanes.remove(&l).is_some_and(|s| s.paused) {
                self.to_resume.push(l);
            }
        }
    }

    /// True when no partition is re-keyed here.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Whether the lane is one of this instance's.
    pub fn has(&self, lane: Lane) -> bool {
        self.lanes.contains_key(&lane)
    }

    /// Buffers a polled message.
    pub fn push(&mut self, lane: Lane, msg: Buffered) {
        let Some(s) = self.lanes.get_mut(&lane) else {
            return;
        };
        s.last = Some(msg.offset);
        s.buf.push_back(msg);
        self.pushed += 1;
        s.seqs.push_back(self.pushed);
        s.waiting = None;
        s.confirmed = None;
        s.refused = 0;
        if !s.paused && s.buf.len() >= self.bound {
            s.paused = true;
            self.to_pause.push(lane);
        }
    }

    /// The next offset the lane expects: after the last message buffered
    /// since its reset (routed or not), if any.
    pub fn next_offset(&self, lane: Lane) -> Option<i64> {
        self.lanes.get(&lane)?.last.map(|o| o + 1)
    }

    /// The caller's check (asked by [`Merge::due_checks`] at `now`) found
    /// nothing in the lane's log past what was buffered.
    pub fn at_end(&mut self, lane: Lane, now: Duration) {
        if let Some(s) = self.lanes.get_mut(&lane) {
            if s.buf.is_empty() && s.waiting.is_some() {
                s.confirmed = Some(now);
                s.confirmed_after = self.pushed;
            }
        }
    }

    /// The caller's check found more in the lane's log than was buffered
    /// (its leader answered).
    pub fn not_at_end(&mut self, lane: Lane) {
        if let Some(s) = self.lanes.get_mut(&lane) {
            if s.buf.is_empty() && s.waiting.is_some() {
                s.refused += 1;
            }
        }
    }

    /// Waited on for [`IDLE_LIMIT`] idle periods, with half as many checks
    /// answered: its end will not be confirmed.
    fn waited_out(&self, s: &LaneState, now: Duration) -> bool {
        s.waiting
            .is_some_and(|w| now.saturating_sub(w) >= self.idle * IDLE_LIMIT)
            && s.refused >= IDLE_LIMIT / 2
    }

    fn fresh(&self, s: &LaneState, now: Duration) -> bool {
        s.confirmed
            .is_some_and(|c| now.saturating_sub(c) < self.idle)
    }

    /// An empty lane may be passed over: its end was confirmed within the
    /// last idle period, after it had been waited on for one, or it was
    /// waited on for [`IDLE_LIMIT`] periods.
    fn passable(&self, s: &LaneState, now: Duration) -> bool {
        !s.buf.is_empty() || (s.waiting.is_some() && self.fresh(s, now)) || self.waited_out(s, now)
    }

    /// Whether an empty lane, passable by its confirmed end, may be passed
    /// over by the message pushed as `seq`: only if it had arrived before
    /// the check. (A lane passed over after its longest wait, or not empty,
    /// always may.)
    fn vouches(&self, s: &LaneState, now: Duration, seq: u64) -> bool {
        if !s.buf.is_empty() || !self.fresh(s, now) {
            return true;
        }
        self.waited_out(s, now) || seq <= s.confirmed_after
    }

    /// The empty lanes that hold the others back at `now`.
    pub fn blocking(&self, now: Duration) -> Vec<Lane> {
        self.lanes
            .iter()
            .filter(|(_, s)| !self.passable(s, now))
            .map(|(l, _)| *l)
            .collect()
    }

    /// The lanes whose end is due to be checked: waited on for an idle
    /// period at least, not confirmed, not checked in the last period.
    /// They are marked checked.
    pub fn due_checks(&mut self, now: Duration) -> Vec<Lane> {
        let idle = self.idle;
        let limit = idle * IDLE_LIMIT;
        let mut due = Vec::new();
        for (&lane, s) in &mut self.lanes {
            let Some(w) = s.waiting else { continue };
            let waited = now.saturating_sub(w);
            let fresh = s.confirmed.is_some_and(|c| now.saturating_sub(c) < idle);
            let waited_out = waited >= limit && s.refused >= IDLE_LIMIT / 2;
            if !s.buf.is_empty() || fresh || waited < idle || waited_out {
                continue;
            }
            if s.checked
                .is_none_or(|c| c < w + idle || now.saturating_sub(c) >= idle)
            {
                s.checked = Some(now);
                due.push(lane);
            }
        }
        due
    }

    /// The buffered message to route next, if the merge may go on: the one
    /// with the smallest (effective timestamp, partition, topic, offset)
    /// once every lane has a message or may be passed over; it comes with
    /// its effective timestamp. An empty lane starts to be waited on when
    /// another has a message.
    pub fn next(&mut self, now: Duration) -> Option<(Lane, Buffered)> {
        let mut best: Option<(Lane, (i64, i32, usize, i64))> = None;
        let mut any_empty = false;
        for (&lane, s) in &self.lanes {
            match s.buf.front() {
                None => any_empty = true,
                Some(m) => {
                    let rank = (m.timestamp.max(s.floor), lane.1, lane.0, m.offset);
                    if best.is_none_or(|(_, b)| rank < b) {
                        best = Some((lane, rank));
                    }
                }
            }
        }
        if best.is_none() {
            // Nobody waits: the next message starts new waits, with checks
            // made after it arrived.
            for s in self.lanes.values_mut() {
                s.waiting = None;
                s.confirmed = None;
                s.refused = 0;
            }
            return None;
        }
        // The common case under load, every lane with a message, costs
        // the one pass above.
        if any_empty {
            for s in self.lanes.values_mut() {
                if s.buf.is_empty() {
                    s.waiting.get_or_insert(now);
                }
            }
            let best_seq = best
                .and_then(|(l, _)| self.lanes[&l].seqs.front().copied())
                .unwrap_or(0);
            if self
                .lanes
                .values()
                .any(|s| !self.passable(s, now) || !self.vouches(s, now, best_seq))
            {
                return None;
            }
        }
        let (lane, rank) = best?;
        if any_empty {
            // The empty lanes are passed over: their next messages rank
            // after this one, whatever their timestamps.
            for (&(t, p), s) in &mut self.lanes {
                if s.buf.is_empty() {
                    let ts = if (p, t) > (lane.1, lane.0) {
                        rank.0
                    } else {
                        rank.0.saturating_add(1)
                    };
                    s.floor = s.floor.max(ts);
                }
            }
        }
        let s = self.lanes.get_mut(&lane).expect("found above");
        let mut msg = s.buf.pop_front().expect("non-empty");
        s.seqs.pop_front();
        // Routed with its effective timestamp.
        s.floor = s.floor.max(rank.0);
        msg.timestamp = rank.0;
        if s.paused && s.buf.len() <= self.bound / 2 {
            s.paused = false;
            self.to_resume.push(lane);
        }
        Some((lane, msg))
    }

    /// When the merge must be looked at again although nothing arrives: a
    /// waited-on lane's next check, or the end of its wait.
    pub fn wake(&self, now: Duration) -> Option<Duration> {
        // The next message to route, whose arrival a confirmation must postdate.
        let head = self
            .lanes
            .values()
            .filter_map(|s| Some((s.buf.front()?.timestamp, s.seqs.front().copied()?)))
            .min()
            .map(|(_, seq)| seq);
        let held = self.lanes.values().filter_map(|s| {
            if let Some(seq) = head {
                if self.passable(s, now) && !self.vouches(s, now, seq) {
                    // Its confirmation is too old for that message: the
                    // next check falls due when it lapses.
                    return Some(s.confirmed? + self.idle);
                }
            }
            if self.passable(s, now) {
                return None;
            }
            let w = s.waiting?;
            let first = w + self.idle;
            let check = match s.checked {
                Some(c) if c >= first => c + self.idle,
                _ => first,
            };
            Some(check.min(w + self.idle * IDLE_LIMIT))
        });
        held.min().map(|t| t.saturating_sub(now))
    }

    /// Lanes to pause and to resume since the last call.
    pub fn take_flow(&mut self) -> (Vec<Lane>, Vec<Lane>) {
        (
            std::mem::take(&mut self.to_pause),
            std::mem::take(&mut self.to_resume),
        )
    }

    /// Messages buffered over all lanes.
    pub fn buffered(&self) -> usize {
        self.lanes.values().map(|s| s.buf.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consistent_partitioner_is_librdkafkas_crc32() {
        use crate::config::Partitioner;
        // CRC-32 check value of "123456789": 0xCBF43926 = 3,421,780,262.
        assert_eq!(
            Partitioner::ConsistentRandom.partition(b"123456789", 1000),
            262
        );
        assert_eq!(Partitioner::ConsistentRandom.partition(b"", 7), 0);
        assert_eq!(
            Partitioner::Murmur2Random.partition(b"21", 10),
            partition_for(b"21", 10)
        );
    }

    #[test]
    fn murmur2_gives_kafkas_values() {
        // Kafka's own test vectors (clients' UtilsTest) and those other
        // ports check against the Java implementation.
        let cases: [(&[u8], i32); 11] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partitions_follow_the_java_default_partitioner() {
        // toPositive(murmur2) % n, never negative, and spread.
        assert_eq!(
            partition_for(b"21", 8),
            ((-973_932_308i32 & 0x7fff_ffff) % 8)
        );
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            let p = partition_for(format!("L-{i}").as_bytes(), 8);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    fn msg(offset: i64, timestamp: i64) -> Buffered {
        Buffered {
            offset,
            timestamp,
            key: None,
            payload: Some(format!("{offset}").into_bytes()),
            headers: Vec::new(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn order(m: &mut Merge, now: Duration) -> Vec<(Lane, i64)> {
        std::iter::from_fn(|| m.next(now))
            .map(|(l, b)| (l, b.offset))
            .collect()
    }

    #[test]
    fn routes_in_timestamp_order_once_every_partition_has_a_message() {
        let mut m = Merge::new(ms(100), 100);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        m.push((0, 0), msg(0, 10));
        m.push((0, 0), msg(1, 30));
        assert_eq!(m.next(ms(1)), None, "partition 1 may still have older ones");
        m.push((0, 1), msg(0, 20));
        m.push((0, 1), msg(1, 30));
        // Ties go by partition; partition 0 then runs dry and holds back.
        assert_eq!(
            order(&mut m, ms(2)),
            [((0, 0), 0), ((0, 1), 0), ((0, 0), 1)]
        );
        assert_eq!(m.blocking(ms(2)), [(0, 0)]);
        // Waited on for an idle period, then its end is checked.
        assert!(m.due_checks(ms(101)).is_empty());
        assert_eq!(m.due_checks(ms(102)), [(0, 0)]);
        assert_eq!(m.next(ms(102)), None, "not confirmed yet");
        m.at_end((0, 0), ms(102));
        assert_eq!(order(&mut m, ms(102)), [((0, 1), 1)]);
        // A new message takes a lane off its end.
        m.push((0, 0), msg(2, 50));
        m.push((0, 1), msg(2, 60));
        assert_eq!(order(&mut m, ms(103)), [((0, 0), 2)]);
        assert_eq!(m.blocking(ms(103)), [(0, 0)]);
    }

    #[test]
    fn a_check_that_finds_more_keeps_the_wait_and_checks_again_each_period() {
        let mut m = Merge::new(ms(100), 100);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        m.push((0, 0), msg(7, 5));
        assert_eq!(m.next(ms(50)), None, "the wait on partition 1 starts");
        assert_eq!(m.wake(ms(50)), Some(ms(100)), "its first check");
        assert_eq!(m.due_checks(ms(150)), [(0, 1)]);
        assert!(m.due_checks(ms(150)).is_empty(), "once per period");
        assert_eq!(m.wake(ms(150)), Some(ms(100)));
        assert_eq!(m.next(ms(249)), None);
        assert_eq!(m.due_checks(ms(250)), [(0, 1)]);
        // A lane whose end is never confirmed, its leader answering, lets
        // go after the limit; one whose leader does not answer is waited for.
        let limit = 50 + 100 * u64::from(IDLE_LIMIT);
        assert_eq!(m.next(ms(limit)), None, "no check answered");
        for _ in 0..IDLE_LIMIT / 2 {
            m.not_at_end((0, 1));
        }
        assert_eq!(m.next(ms(limit - 1)), None);
        assert_eq!(order(&mut m, ms(limit)), [((0, 0), 7)]);
        assert_eq!(
            m.wake(ms(limit)),
            None,
            "nothing buffered, nothing to wait for"
        );
    }

    #[test]
    fn an_end_confirmed_before_the_wait_does_not_count() {
        let mut m = Merge::new(ms(100), 100);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        // Nothing is waited on while nothing is buffered.
        m.at_end((0, 1), ms(0));
        m.push((0, 0), msg(1, 5));
        assert_eq!(m.next(ms(10)), None);
        assert_eq!(m.blocking(ms(10)), [(0, 1)]);
    }

    #[test]
    fn an_end_vouches_only_for_messages_that_arrived_before_its_check() {
        let mut m = Merge::new(ms(100), 1000);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        m.push((0, 0), msg(0, 10));
        assert!(m.next(ms(0)).is_none(), "lane 1 is waited on");
        assert_eq!(m.due_checks(ms(100)), vec![(0, 1)]);
        m.at_end((0, 1), ms(100));
        assert_eq!(
            m.next(ms(100)).map(|(l, x)| (l, x.offset)),
            Some(((0, 0), 0))
        );
        // A message that arrives after the check may have been written with
        // lane 1's next ones, which the check could not see: it waits for a
        // check made after it.
        m.push((0, 0), msg(1, 30));
        assert!(m.next(ms(120)).is_none());
        assert_eq!(
            m.wake(ms(120)),
            Some(ms(80)),
            "look again when the confirmation lapses"
        );
        m.push((0, 1), msg(0, 20));
        assert_eq!(
            order(&mut m, ms(130)),
            vec![((0, 1), 0)],
            "lane 1's earlier message first; then lane 1 is waited on again"
        );
        assert_eq!(m.due_checks(ms(230)), vec![(0, 1)]);
        m.at_end((0, 1), ms(230));
        assert_eq!(order(&mut m, ms(230)), vec![((0, 0), 1)]);
    }

    #[test]
    fn an_end_holds_for_one_idle_period_and_not_past_a_lull() {
        let mut m = Merge::new(ms(100), 100);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        for o in 0..3 {
            m.push((0, 0), msg(o, o));
        }
        assert_eq!(m.next(ms(0)), None);
        assert_eq!(m.due_checks(ms(100)), [(0, 1)]);
        m.at_end((0, 1), ms(100));
        assert_eq!(m.next(ms(150)).map(|(_, b)| b.offset), Some(0));
        // The confirmation is old: check again before going on.
        assert_eq!(m.next(ms(200)), None);
        assert_eq!(m.due_checks(ms(200)), [(0, 1)]);
        m.at_end((0, 1), ms(200));
        assert_eq!(order(&mut m, ms(201)).len(), 2);
        // Everything routed: the next burst waits afresh, even at once.
        assert_eq!(m.next(ms(202)), None);
        m.push((0, 0), msg(3, 3));
        assert_eq!(
            m.next(ms(202)),
            None,
            "partition 1's part may be on its way"
        );
    }

    #[test]
    fn a_lane_passed_while_empty_ranks_its_next_message_after_and_marks_say_so() {
        let mut m = Merge::new(ms(100), 100);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), 25);
        assert_eq!(
            m.bound((0, 1), 4),
            Some((25, 4)),
            "the floor from its checkpoint"
        );
        m.push((0, 0), msg(0, 10));
        m.push((0, 1), msg(0, 20));
        // Lane 1's message ranks at its floor, after lane 0's.
        let out: Vec<_> = std::iter::from_fn(|| m.next(ms(0)))
            .map(|(l, b)| (l, b.timestamp))
            .collect();
        assert_eq!(out, [((0, 0), 10)]);
        assert_eq!(m.bound((0, 1), 0), Some((25, 0)));
        m.push((0, 0), msg(1, 30));
        assert_eq!(
            m.next(ms(0)).map(|(l, b)| (l, b.timestamp)),
            Some(((0, 1), 25))
        );
        // Lane 1 is empty: passed over (after its end is confirmed) for
        // lane 0's message at 30, its next one ranks after it.
        assert_eq!(m.next(ms(1)), None);
        assert_eq!(m.due_checks(ms(101)), [(0, 1)]);
        m.at_end((0, 1), ms(101));
        assert_eq!(m.next(ms(101)).map(|(_, b)| b.timestamp), Some(30));
        assert_eq!(m.floor((0, 1)), Some(30), "partition 1 > 0: same timestamp");
        assert_eq!(m.floor((0, 0)), Some(30));
        m.push((0, 1), msg(1, 12));
        assert_eq!(m.bound((0, 1), 0), Some((30, 1)));
        m.push((0, 0), msg(2, 30));
        // Lane 0's (30, p0) ranks before lane 1's promoted (30, p1).
        let out: Vec<_> = std::iter::from_fn(|| m.next(ms(102)))
            .map(|(l, b)| (l, b.timestamp))
            .collect();
        assert_eq!(out, [((0, 0), 30)], "then lane 0, empty, is waited on");
        m.push((0, 0), msg(3, 31));
        assert_eq!(
            m.next(ms(102)).map(|(l, b)| (l, b.timestamp)),
            Some(((0, 1), 30))
        );
    }

    #[test]
    fn a_full_partition_is_paused_and_resumed_at_half() {
        let mut m = Merge::new(ms(100), 4);
        m.reset((0, 0), i64::MIN);
        for o in 0..4 {
            m.push((0, 0), msg(o, o));
        }
        assert_eq!(m.take_flow(), (vec![(0, 0)], vec![]));
        m.push((0, 0), msg(4, 4));
        assert_eq!(m.take_flow(), (vec![], vec![]), "paused once");
        m.next(ms(1));
        m.next(ms(1));
        assert_eq!(m.take_flow(), (vec![], vec![]));
        m.next(ms(1));
        assert_eq!(m.take_flow(), (vec![], vec![(0, 0)]));
    }

    #[test]
    fn a_reset_or_revocation_drops_the_buffer_and_resumes_a_paused_lane() {
        let mut m = Merge::new(ms(100), 2);
        m.reset((0, 0), i64::MIN);
        m.reset((0, 1), i64::MIN);
        m.push((0, 0), msg(0, 1));
        m.push((0, 0), msg(1, 2));
        m.push((0, 1), msg(0, 1));
        m.push((0, 1), msg(1, 2));
        m.take_flow();
        m.reset((0, 0), i64::MIN);
        m.drop_partition(1);
        assert_eq!(m.take_flow(), (vec![], vec![(0, 0), (0, 1)]));
        assert_eq!(m.buffered(), 0);
        assert!(!m.has((0, 1)) && m.has((0, 0)));
        m.push((0, 1), msg(2, 3));
        assert_eq!(
            m.buffered(),
            0,
            "a revoked partition's messages are not kept"
        );
    }

    #[test]
    fn topics_merge_too_and_ties_go_by_partition_topic_offset() {
        let mut m = Merge::new(ms(100), 100);
        for lane in [(0, 0), (1, 0), (0, 1)] {
            m.reset(lane, i64::MIN);
        }
        m.push((1, 0), msg(3, 10));
        m.push((0, 1), msg(1, 10));
        m.push((0, 0), msg(9, 10));
        assert_eq!(
            order(&mut m, ms(1))[..1],
            [((0, 0), 9)],
            "partition 0, topic 0 first"
        );
        assert_eq!(m.next_offset((1, 0)), Some(4));
        order(&mut m, ms(1));
        assert_eq!(m.next_offset((1, 0)), Some(4), "routed, still seen");
        m.reset((1, 0), i64::MIN);
        assert_eq!(m.next_offset((1, 0)), None);
    }
}
