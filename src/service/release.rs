//! The scoring side of re-keying: a repartition partition's records folded
//! in the routers' common order, whichever instance routed them. No I/O:
//! the processor offers what it reads and folds what comes out.
//!
//! Each instance routes the input partitions it owns in record-timestamp
//! order ([`super::rekey::Merge`]), and tags each record with its
//! [`Origin`]: the input partition (its *lane*) and its rank there. With
//! one instance that order reaches every repartition partition as written.
//! With several, a repartition partition interleaves the output of every
//! router as their transactions happen to commit; folded in that order, a
//! router running ahead in time would move the partition's watermark past
//! the older events of another's, and fire a lead's timers before them.
//! So records wait here, per lane, and leave lowest rank first, once no
//! lane can still bring a lower one:
//!
//! - a lane with a record waiting has nothing lower to come (ranks only
//!   grow within a lane);
//! - each router writes, at the end of each transaction, a [`LaneMark`] per
//!   lane it owns: the rank every later record of the lane takes at least,
//!   and when it last found the lane's log holding nothing unrouted;
//! - an empty lane whose mark lies above the candidate lets it go, and so
//!   does one whose log was found empty at least `idle` after the candidate
//!   was routed (the router's own rule for an empty partition, carried
//!   across instances: a producer that wrote to both partitions at once has
//!   had `idle` to append the other's part). The lane is then taken to rank
//!   above the candidate from then on.
//!
//! Records an engine sends on (a visitor's handoff, a forwarded event) are
//! ranked by the record whose folding sent them (their *cause*) and go
//! right after it, or at once if that has gone by; they never hold anything
//! back. Records without an origin (sent on from a partition keyed by lead)
//! are folded as they arrive.
//!
//! Memory: an instance whose router stalls (its broker down) holds every
//! other router's records back. Past `max_held` records waiting, the lowest
//! goes without waiting for the stalled lanes (which are then taken to rank
//! above it, as when an empty lane lets a record go), as the router itself
//! gives up on a partition whose end it cannot confirm: bounded memory over
//! exact order, and a warning.
//!
//! Restarts: records leave a lane in the order they were written, so the
//! position (offset, index in the batch) of the last one folded per lane
//! tells a record read again after a restart from one still to fold. The
//! offset committed for the repartition partition is that of the oldest
//! record still waiting; the positions go in the partition's checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use crate::codec::{LaneMark, Origin};

/// A record's place in the routers' common order: effective record
/// timestamp, input partition, topic index, offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    pub timestamp: i64,
    pub partition: i32,
    pub topic: u32,
    pub offset: i64,
}

impl Rank {
    fn of(o: &Origin) -> Rank {
        Rank {
            timestamp: o.timestamp,
            partition: o.partition,
            topic: o.topic,
            offset: o.offset,
        }
    }

    /// The lowest rank of lane `(topic, partition)` above `self`.
    pub fn above_for(self, topic: u32, partition: i32) -> Rank {
        let ts = if (partition, topic) > (self.partition, self.topic) {
            self.timestamp
        } else {
            self.timestamp.saturating_add(1)
        };
        Rank {
            timestamp: ts,
            partition,
            topic,
            offset: i64::MIN,
        }
    }
}

/// An input partition: (topic index, partition).
type LaneId = (u32, i32);

/// A record's position in its repartition partition: the Kafka offset and
/// its index within the batch.
pub type Pos = (i64, u32);

/// Where a record waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// Routed from this input partition: (topic index, partition).
    Input(u32, i32),
    /// Sent on by an engine.
    SecondHop,
    /// Without an origin: folded as it arrives.
    Untagged,
}

/// A record waiting to be folded: its bytes are `payload[range]`.
#[derive(Debug, Clone)]
pub struct Item {
    pub rank: Rank,
    pub routed_at: i64,
    pub pos: Pos,
    pub payload: Arc<[u8]>,
    pub range: Range<usize>,
    pub source: Source,
}

impl Item {
    pub fn bytes(&self) -> &[u8] {
        &self.payload[self.range.clone()]
    }

    /// The origin records sent on while folding this one carry.
    pub fn cause(&self) -> Origin {
        Origin {
            topic: self.rank.topic,
            partition: self.rank.partition,
            timestamp: self.rank.timestamp,
            offset: self.rank.offset,
            routed_at: self.routed_at,
            second_hop: true,
        }
    }
}

#[derive(Debug, Default)]
struct Lane {
    buf: VecDeque<Item>,
    /// Every record still to come ranks at least this.
    bound: Option<Rank>,
    /// When its router last found its log holding nothing unrouted (ms).
    confirmed_at: i64,
}

/// What [`Release::choose`] found may go.
struct Choice {
    rank: Rank,
    from: Option<LaneId>,
    passed: Vec<LaneId>,
    forced: bool,
}

/// What to do with an offered record.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Fold it now.
    Now,
    /// Folded before (read again after a restart): skip it.
    Skip,
    /// It waits: take it from [`Release::pop`].
    Held,
}

/// One repartition partition's records, released in rank order.
#[derive(Debug)]
pub struct Release {
    idle_ms: i64,
    max_held: usize,
    /// Records let go past `max_held` since the last look.
    forced: u64,
    lanes: BTreeMap<(u32, i32), Lane>,
    second: VecDeque<Item>,
    /// The last position folded per source.
    folded: BTreeMap<Source, Pos>,
    /// The highest rank released.
    frontier: Option<Rank>,
    held: usize,
}

impl Release {
    /// `lanes`: every re-keyed input partition, (topic index, partition);
    /// `folded`: the checkpoint's last positions folded.
    pub fn new(
        idle_ms: i64,
        max_held: usize,
        lanes: impl IntoIterator<Item = (u32, i32)>,
        folded: BTreeMap<Source, Pos>,
    ) -> Release {
        Release {
            idle_ms,
            max_held,
            forced: 0,
            lanes: lanes.into_iter().map(|l| (l, Lane::default())).collect(),
            second: VecDeque::new(),
            folded,
            frontier: None,
            held: 0,
        }
    }

    /// The last positions folded, for the checkpoint.
    pub fn folded(&self) -> &BTreeMap<Source, Pos> {
        &self.folded
    }

    /// Records waiting.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Records let go past the limit of records waiting since the last call.
    pub fn take_forced(&mut self) -> u64 {
        std::mem::take(&mut self.forced)
    }

    /// The offset of the oldest record waiting: the repartition offset to
    /// commit (everything before it is folded).
    pub fn low_offset(&self) -> Option<i64> {
        self.lanes
            .values()
            .filter_map(|l| l.buf.front())
            .chain(self.second.front())
            .map(|i| i.pos.0)
            .min()
    }

    fn done(&self, source: Source, pos: Pos) -> bool {
        self.folded.get(&source).is_some_and(|&f| pos <= f)
    }

    /// A record without an origin: folded now unless folded before.
    pub fn offer_untagged(&mut self, pos: Pos) -> Offer {
        if self.done(Source::Untagged, pos) {
            return Offer::Skip;
        }
        self.folded.insert(Source::Untagged, pos);
        Offer::Now
    }

    /// A record with an origin; `payload[range]` are its bytes.
    pub fn offer(
        &mut self,
        pos: Pos,
        origin: &Origin,
        payload: &Arc<[u8]>,
        range: Range<usize>,
    ) -> Offer {
        let source = if origin.second_hop {
            Source::SecondHop
        } else {
            Source::Input(origin.topic, origin.partition)
        };
        if self.done(source, pos) {
            return Offer::Skip;
        }
        let mut rank = Rank::of(origin);
        let item = |rank| Item {
            rank,
            routed_at: origin.routed_at,
            pos,
            payload: Arc::clone(payload),
            range,
            source,
        };
        match source {
            Source::Input(t, p) => {
                let lane = self.lanes.entry((t, p)).or_default();
                // Ranks grow within a lane; one taken above a candidate
                // it let go (a late producer) keeps its place after it.
                let floor = lane.buf.back().map(|i| i.rank).or(lane.bound);
                if let Some(f) = floor.filter(|&f| rank < f) {
                    rank.timestamp = if (rank.partition, rank.topic, rank.offset)
                        > (f.partition, f.topic, f.offset)
                    {
                        f.timestamp
                    } else {
                        f.timestamp.saturating_add(1)
                    };
                }
                lane.buf.push_back(item(rank));
            }
            _ => self.second.push_back(item(rank)),
        }
        self.held += 1;
        Offer::Held
    }

    /// A router's mark for one of its lanes; true if it moved the lane's
    /// bound (its router routed something since).
    pub fn mark(&mut self, m: &LaneMark) -> bool {
        let Some(lane) = self.lanes.get_mut(&(m.topic, m.partition)) else {
            return false;
        };
        let r = Rank {
            timestamp: m.timestamp,
            partition: m.partition,
            topic: m.topic,
            offset: m.offset,
        };
        let moved = lane.bound.is_none_or(|b| r > b);
        lane.bound = lane.bound.max(Some(r));
        lane.confirmed_at = lane.confirmed_at.max(m.confirmed_at);
        moved
    }

    /// Whether a record may go now.
    pub fn ready(&self) -> bool {
        self.choose().is_some()
    }

    /// The next record to fold, if one may go now.
    pub fn pop(&mut self) -> Option<Item> {
        let c = self.choose()?;
        self.forced += u64::from(c.forced);
        for (t, p) in c.passed {
            let lane = self.lanes.get_mut(&(t, p)).expect("a lane");
            lane.bound = lane.bound.max(Some(c.rank.above_for(t, p)));
        }
        self.take(c.from)
    }

    /// What may go now: the lowest head, if no lane can still bring a lower
    /// one; the lanes it passes over by their confirmation (or the limit).
    fn choose(&self) -> Option<Choice> {
        // A record sent on whose cause has gone by goes at once.
        if let Some(h) = self.second.front() {
            if self.frontier.is_some_and(|f| h.rank <= f) {
                return Some(Choice {
                    rank: h.rank,
                    from: None,
                    passed: Vec::new(),
                    forced: false,
                });
            }
        }
        // The candidate: the lowest head; at equal ranks, a lane's record
        // before one it caused.
        // (rank, hop, lane: none for the records sent on)
        let mut best: Option<(Rank, u8, Option<LaneId>)> =
            self.second.front().map(|h| (h.rank, 1, None));
        for (&l, lane) in &self.lanes {
            if let Some(h) = lane.buf.front() {
                if best.is_none_or(|(r, hop, _)| (h.rank, 0) < (r, hop)) {
                    best = Some((h.rank, 0, Some(l)));
                }
            }
        }
        let (rank, _, from) = best?;
        let routed_at = match from {
            Some(l) => self.lanes[&l].buf.front().expect("a head").routed_at,
            None => self.second.front().expect("a head").routed_at,
        };
        // Every other lane: a record waiting (ranked higher), a mark above
        // the candidate, or its log found empty `idle` after it was routed.
        let mut passed = Vec::new();
        let mut forced = false;
        for (&l, lane) in &self.lanes {
            if Some(l) == from || !lane.buf.is_empty() || lane.bound.is_some_and(|b| b > rank) {
                continue;
            }
            if lane.confirmed_at >= routed_at.saturating_add(self.idle_ms) {
                passed.push(l);
            } else if self.held > self.max_held {
                passed.push(l);
                forced = true;
            } else {
                return None;
            }
        }
        Some(Choice {
            rank,
            from,
            passed,
            forced,
        })
    }

    /// Whether `(topic, partition)` is one of the lanes it was made with.
    pub fn knows(&self, topic: u32, partition: i32) -> bool {
        self.lanes.contains_key(&(topic, partition))
    }

    fn take(&mut self, from: Option<LaneId>) -> Option<Item> {
        let item = match from {
            Some(l) => self.lanes.get_mut(&l)?.buf.pop_front()?,
            None => self.second.pop_front()?,
        };
        self.held -= 1;
        self.folded.insert(item.source, item.pos);
        self.frontier = self.frontier.max(Some(item.rank));
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(topic: u32, partition: i32, ts: i64, offset: i64, at: i64) -> Origin {
        Origin {
            topic,
            partition,
            timestamp: ts,
            offset,
            routed_at: at,
            second_hop: false,
        }
    }

    fn mark(partition: i32, ts: i64, offset: i64, confirmed_at: i64) -> LaneMark {
        LaneMark {
            topic: 0,
            partition,
            timestamp: ts,
            offset,
            confirmed_at,
        }
    }

    struct T {
        r: Release,
        payload: Arc<[u8]>,
        next_pos: i64,
    }

    impl T {
        fn new(lanes: i32) -> T {
            T {
                r: Release::new(100, 1000, (0..lanes).map(|p| (0, p)), BTreeMap::new()),
                payload: Arc::from(&b"x"[..]),
                next_pos: 0,
            }
        }
        fn offer(&mut self, o: Origin) -> Offer {
            self.next_pos += 1;
            self.r.offer((self.next_pos, 0), &o, &self.payload, 0..1)
        }
        fn out(&mut self) -> Vec<(i32, i64)> {
            std::iter::from_fn(|| self.r.pop())
                .map(|i| (i.rank.partition, i.rank.offset))
                .collect()
        }
    }

    #[test]
    fn two_routers_interleaved_come_out_in_rank_order() {
        let mut t = T::new(2);
        // Router of lane 1 commits first, with records later in time.
        t.offer(origin(0, 1, 30, 0, 1_000));
        t.offer(origin(0, 1, 40, 1, 1_000));
        t.r.mark(&mark(1, 40, 2, 0));
        assert!(t.out().is_empty(), "lane 0 has said nothing yet");
        t.offer(origin(0, 0, 10, 0, 1_000));
        t.offer(origin(0, 0, 35, 1, 1_000));
        assert_eq!(t.out(), [(0, 0), (1, 0), (0, 1)]);
        // Lane 0 is empty now, its mark below lane 1's head: wait.
        t.r.mark(&mark(0, 35, 2, 0));
        assert!(t.out().is_empty());
        t.r.mark(&mark(0, 50, 3, 0));
        assert_eq!(t.out(), [(1, 1)]);
        assert_eq!(t.r.held(), 0);
        assert_eq!(t.r.low_offset(), None);
    }

    #[test]
    fn an_empty_lane_lets_go_once_found_empty_an_idle_period_after_routing() {
        let mut t = T::new(2);
        t.offer(origin(0, 0, 10, 0, 1_000));
        t.r.mark(&mark(1, 5, 0, 1_050));
        assert!(t.out().is_empty(), "confirmed too soon after routing");
        assert_eq!(t.r.low_offset(), Some(1));
        t.r.mark(&mark(1, 5, 0, 1_100));
        assert_eq!(t.out(), [(0, 0)]);
        // A record of lane 1 that comes later, older in time, keeps its
        // place after what went by.
        t.offer(origin(0, 1, 7, 0, 1_200));
        t.offer(origin(0, 0, 10, 1, 1_200));
        t.r.mark(&mark(0, 20, 2, 0));
        t.r.mark(&mark(1, 20, 1, 0));
        let out: Vec<_> = std::iter::from_fn(|| t.r.pop())
            .map(|i| (i.rank.partition, i.rank.timestamp))
            .collect();
        assert_eq!(
            out,
            [(0, 10), (1, 10)],
            "lane 1 taken to rank above (10, lane 0)"
        );
    }

    #[test]
    fn past_the_limit_the_lowest_goes_without_a_stalled_lane() {
        let mut t = T::new(2);
        t.r.max_held = 3;
        for o in 0..4 {
            t.offer(origin(0, 0, 10 + o, o, 1_000));
        }
        assert_eq!(t.out(), [(0, 0)], "one over the limit: one goes");
        assert_eq!(t.r.take_forced(), 1);
        assert_eq!(t.r.held(), 3);
        // Lane 1's record, older, comes after what went (and before lane
        // 0's next, at 11).
        t.offer(origin(0, 1, 5, 0, 1_000));
        t.r.mark(&mark(1, 5, 1, 0));
        let out: Vec<_> = std::iter::from_fn(|| t.r.pop())
            .map(|i| (i.rank.partition, i.rank.timestamp))
            .collect();
        assert_eq!(out, [(1, 10)]);
    }

    #[test]
    fn records_sent_on_follow_their_cause() {
        let mut t = T::new(2);
        let mut cause = origin(0, 0, 10, 0, 1_000);
        t.offer(cause);
        cause.second_hop = true;
        t.offer(cause);
        t.offer(origin(0, 1, 10, 0, 1_000));
        t.r.mark(&mark(0, 11, 1, 0));
        t.r.mark(&mark(1, 11, 1, 0));
        let out: Vec<_> = std::iter::from_fn(|| t.r.pop())
            .map(|i| (i.source, i.rank.partition))
            .collect();
        assert_eq!(
            out,
            [
                (Source::Input(0, 0), 0),
                (Source::SecondHop, 0),
                (Source::Input(0, 1), 1)
            ]
        );
        // One whose cause is long gone goes at once, nothing else waiting.
        cause.timestamp = 3;
        t.offer(cause);
        assert_eq!(t.out().len(), 1);
    }

    #[test]
    fn a_restart_skips_what_was_folded_and_refolds_what_waited() {
        let mut t = T::new(2);
        t.offer(origin(0, 0, 10, 0, 0)); // pos 1
        t.offer(origin(0, 1, 20, 0, 0)); // pos 2
        t.offer(origin(0, 0, 30, 1, 0)); // pos 3
        t.r.mark(&mark(1, 25, 1, 0));
        assert_eq!(t.out(), [(0, 0), (1, 0)]);
        assert_eq!(t.r.low_offset(), Some(3));
        let folded = t.r.folded().clone();
        // Read again from the committed offset 3... and before it, had the
        // commit been older.
        let mut r = Release::new(100, 1000, (0..2).map(|p| (0, p)), folded);
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        assert_eq!(
            r.offer((1, 0), &origin(0, 0, 10, 0, 0), &payload, 0..1),
            Offer::Skip
        );
        assert_eq!(
            r.offer((2, 0), &origin(0, 1, 20, 0, 0), &payload, 0..1),
            Offer::Skip
        );
        assert_eq!(
            r.offer((3, 0), &origin(0, 0, 30, 1, 0), &payload, 0..1),
            Offer::Held
        );
        assert_eq!(r.offer_untagged((4, 0)), Offer::Now);
        assert_eq!(r.offer_untagged((4, 0)), Offer::Skip);
    }
}
