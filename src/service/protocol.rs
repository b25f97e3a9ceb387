//! The commit protocol, exactly-once and at-least-once, as a state machine
//! that does no I/O.
//!
//! The shell ([`super::processor`]) tells it what happened — a message was
//! consumed, time passed, the writes were acknowledged, a commit succeeded or
//! failed, partitions were assigned or revoked, the group refused the static
//! id — and performs the [`Action`]s it queues, in order, reporting each
//! result back. It never touches Kafka, a clock or a thread, so every
//! transition is a unit test (below), and the broker tests prove that the
//! shell performs the actions right (as nakamoto's and quinn-proto's
//! protocol cores are driven by their reactors).
//!
//! Exactly-once: a transaction opens at the first input after a commit. When
//! the commit interval has passed, the changelog is written and the offsets
//! are fixed ([`Phase::Committing`]); input goes on being folded meanwhile,
//! its writes held back for the next transaction, until the changelog writes
//! are acknowledged (or [`Settings::overlap`] passed, or
//! [`Settings::hold_limit`] writes are held). Then the offsets are sent to
//! the transaction and it is committed; the held writes open the next one.
//! A failed commit aborts and rewinds every partition to the last commit.
//!
//! At-least-once: at the interval the changes are flushed, then the
//! changelog, then the offsets are committed to the group; a crash in
//! between re-emits identical changes, never loses one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Which guarantee the protocol gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ExactlyOnce,
    AtLeastOnce,
}

/// The protocol's knobs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Time between commits (from the end of one to the start of the next).
    pub interval: Duration,
    /// Exactly-once: how long processing may go on while the changelog
    /// writes of a starting commit are acknowledged.
    pub overlap: Duration,
    /// ... or how many writes may be held for the next transaction meanwhile.
    pub hold_limit: usize,
    /// At most this many rejoins after a refused static id ...
    pub rejoin_max: usize,
    /// ... within this window; then the service stops.
    pub rejoin_window: Duration,
}

impl Settings {
    pub fn new(mode: Mode, interval: Duration) -> Settings {
        Settings {
            mode,
            interval,
            overlap: Duration::from_secs(1),
            hold_limit: 200_000,
            rejoin_max: 5,
            rejoin_window: Duration::from_secs(600),
        }
    }
}

/// Next offset to read, per input topic (by index in the config's list).
pub type Positions = BTreeMap<i32, Vec<i64>>;

/// A partition's checkpoint as the protocol fixes it: the next input offsets
/// its state reflects (`-1`: not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointAt {
    pub partition: i32,
    pub next: Vec<i64>,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a transaction (exactly-once).
    Begin,
    /// Write the state of the leads touched since the last changelog write,
    /// and a checkpoint for each of these partitions.
    WriteChangelog(Vec<CheckpointAt>),
    /// Exactly-once: send these offsets to the transaction and commit it;
    /// report with [`Protocol::committed`].
    Commit(Positions),
    /// At-least-once: wait until every write is acknowledged; report with
    /// [`Protocol::flushed`].
    Flush,
    /// At-least-once: commit these offsets to the group; report with
    /// [`Protocol::committed`].
    CommitOffsets(Positions),
    /// Send the writes held back while the previous transaction committed.
    ReleaseHeld,
    /// Throw the held writes away (their transaction is aborted).
    DiscardHeld,
    /// Abort the open transaction; report with [`Protocol::aborted`].
    Abort,
    /// Rebuild these partitions from the changelog and move the consumer
    /// back to the committed offsets; report with [`Protocol::rewound`].
    Rewind(Vec<i32>),
    /// Restore these newly assigned partitions from the changelog before
    /// any of their input is processed; report with [`Protocol::restored`].
    Restore(Vec<i32>),
    /// Forget these partitions' state (revoked, or dropped to rejoin).
    Drop(Vec<i32>),
    /// Replace the consumer with a new one: the group refused the static id.
    Rejoin,
    /// Stop the service.
    Stop(Stop),
}

/// Why the service stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Asked to (a signal, the caller's shutdown handle).
    Shutdown,
    /// This instance must not go on (fenced, not authorised, a state that
    /// cannot be restored); the message says why and what to do.
    Fatal(String),
}

/// How a broker call failed, as the shell classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Transient (the broker went away, a write was lost): retry from the
    /// last commit.
    Retriable(String),
    /// The group refused this instance's static id.
    InstanceFenced(String),
    /// This instance must stop (fenced producer, not authorised).
    Fatal(String),
}

/// Where the protocol is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Nothing to commit.
    Idle,
    /// Input processed since the last commit (exactly-once: a transaction open).
    Open,
    /// Exactly-once: the changelog is written and the offsets fixed; waiting
    /// for the writes to be acknowledged while processing goes on.
    Committing { offsets: Positions, since: Duration },
    /// Exactly-once: `Commit` asked, waiting for its result.
    Finishing,
    /// At-least-once: flushing the changes, then the changelog.
    Flushing { changelog_written: bool },
    /// At-least-once: `CommitOffsets` asked, waiting for its result.
    CommittingOffsets,
    /// `Abort` asked, waiting for its result.
    Aborting,
    /// `Stop` was queued; nothing more happens.
    Stopped,
}

/// The commit protocol of one service instance.
#[derive(Debug)]
pub struct Protocol {
    s: Settings,
    phase: Phase,
    /// Partitions assigned to this instance.
    assigned: BTreeSet<i32>,
    /// Next offset per assigned partition and input topic.
    positions: Positions,
    topics: usize,
    /// Partitions with input or timers since the last changelog write.
    active: BTreeSet<i32>,
    /// Writes held back while committing, and whether input was processed
    /// meanwhile (the next transaction has offsets to commit at least).
    held: usize,
    held_work: bool,
    /// When the next commit is due.
    due: Duration,
    actions: VecDeque<Action>,
    /// Commit everything now, then drop these partitions (a revocation) or
    /// stop (a shutdown).
    draining: Option<Drain>,
    /// Partitions to rewind once the pending abort is done.
    rewind_after_abort: bool,
    /// A failed rewind is tried again at the next tick.
    rewind_pending: bool,
    rejoins: VecDeque<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Drain {
    Revoke(Vec<i32>),
    Shutdown,
}

impl Protocol {
    /// A protocol for `topics` input topics, starting at `now`.
    pub fn new(s: Settings, topics: usize, now: Duration) -> Protocol {
        Protocol {
            due: now + s.interval,
            s,
            phase: Phase::Idle,
            assigned: BTreeSet::new(),
            positions: Positions::new(),
            topics,
            active: BTreeSet::new(),
            held: 0,
            held_work: false,
            actions: VecDeque::new(),
            draining: None,
            rewind_after_abort: false,
            rewind_pending: false,
            rejoins: VecDeque::new(),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A transaction is open (or, at-least-once, work is uncommitted).
    pub fn open(&self) -> bool {
        !matches!(self.phase, Phase::Idle | Phase::Stopped)
    }

    /// The partitions assigned to this instance.
    pub fn partitions(&self) -> &BTreeSet<i32> {
        &self.assigned
    }

    /// The next offsets of each assigned partition that has been read.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// How long the shell may wait for input before the next [`Protocol::tick`].
    pub fn wait(&self, now: Duration) -> Duration {
        match self.phase {
            // Back soon to finish the commit once its writes are acknowledged.
            Phase::Committing { .. } => Duration::from_millis(2),
            _ => self.due.saturating_sub(now).min(Duration::from_millis(100)),
        }
    }

    fn work(&mut self, partition: i32) {
        self.active.insert(partition);
        match self.phase {
            Phase::Idle => {
                if self.s.mode == Mode::ExactlyOnce {
                    self.actions.push_back(Action::Begin);
                }
                self.phase = Phase::Open;
            }
            Phase::Committing { .. } => self.held_work = true,
            _ => {}
        }
    }

    /// A message at `offset` of input topic `topic` (its index) in
    /// `partition` was processed (folded or dead-lettered).
    pub fn consumed(&mut self, partition: i32, topic: usize, offset: i64) {
        self.work(partition);
        let topics = self.topics;
        let next = self
            .positions
            .entry(partition)
            .or_insert_with(|| vec![-1; topics]);
        next[topic] = offset + 1;
    }

    /// `partition` changed without input (timers fired by the wall clock).
    pub fn touched(&mut self, partition: i32) {
        self.work(partition);
    }

    /// Asked before each write: true when it must be held back for the next
    /// transaction (the current one is committing).
    pub fn hold(&mut self) -> bool {
        if matches!(self.phase, Phase::Committing { .. }) {
            self.held += 1;
            true
        } else {
            false
        }
    }

    fn checkpoints(&mut self) -> Vec<CheckpointAt> {
        let topics = self.topics;
        std::mem::take(&mut self.active)
            .into_iter()
            .map(|p| CheckpointAt {
                partition: p,
                next: self
                    .positions
                    .get(&p)
                    .cloned()
                    .unwrap_or_else(|| vec![-1; topics]),
            })
            .collect()
    }

    /// Starts a commit of what is open.
    fn start_commit(&mut self, now: Duration) {
        match self.s.mode {
            Mode::ExactlyOnce => {
                let cps = self.checkpoints();
                self.actions.push_back(Action::WriteChangelog(cps));
                self.phase = Phase::Committing {
                    offsets: self.positions.clone(),
                    since: now,
                };
            }
            Mode::AtLeastOnce => {
                // Changes first, then the state that reflects them, then
                // the offsets.
                self.actions.push_back(Action::Flush);
                self.phase = Phase::Flushing {
                    changelog_written: false,
                };
            }
        }
    }

    fn finish_commit(&mut self) {
        let Phase::Committing { offsets, .. } =
            std::mem::replace(&mut self.phase, Phase::Finishing)
        else {
            unreachable!("finish_commit outside Committing")
        };
        self.actions.push_back(Action::Commit(offsets));
    }

    /// Time passed; `in_flight` writes are not acknowledged yet.
    pub fn tick(&mut self, now: Duration, in_flight: usize) {
        if self.rewind_pending && self.phase == Phase::Idle {
            self.rewind_pending = false;
            self.rewind_all();
            return;
        }
        match &self.phase {
            Phase::Open if now >= self.due => self.start_commit(now),
            Phase::Idle if now >= self.due => self.due = now + self.s.interval,
            Phase::Committing { since, .. }
                if in_flight == 0
                    || now.saturating_sub(*since) >= self.s.overlap
                    || self.held >= self.s.hold_limit =>
            {
                self.finish_commit()
            }
            _ => {}
        }
    }

    /// At-least-once: the result of a [`Action::Flush`].
    pub fn flushed(&mut self, now: Duration, result: Result<(), Failure>) {
        if self.phase == Phase::Stopped {
            return;
        }
        if let Err(f) = result {
            return self.failed(now, f);
        }
        match self.phase {
            Phase::Flushing {
                changelog_written: false,
            } => {
                let cps = self.checkpoints();
                self.actions.push_back(Action::WriteChangelog(cps));
                self.actions.push_back(Action::Flush);
                self.phase = Phase::Flushing {
                    changelog_written: true,
                };
            }
            Phase::Flushing {
                changelog_written: true,
            } => {
                if self.positions.values().any(|n| n.iter().any(|&o| o >= 0)) {
                    self.actions
                        .push_back(Action::CommitOffsets(self.positions.clone()));
                    self.phase = Phase::CommittingOffsets;
                } else {
                    self.committed(now, Ok(()));
                }
            }
            _ => {}
        }
    }

    /// The result of a [`Action::Commit`] or [`Action::CommitOffsets`].
    pub fn committed(&mut self, now: Duration, result: Result<(), Failure>) {
        if self.phase == Phase::Stopped {
            return;
        }
        if let Err(f) = result {
            return self.failed(now, f);
        }
        // The interval runs from the end of a commit: a commit takes a
        // broker round trip or two, and must not eat the next interval.
        self.due = now + self.s.interval;
        self.phase = Phase::Idle;
        if std::mem::take(&mut self.held_work) || self.held > 0 {
            // The next transaction: what was processed while this one committed.
            self.held = 0;
            self.actions.push_back(Action::Begin);
            self.actions.push_back(Action::ReleaseHeld);
            self.phase = Phase::Open;
        }
        self.continue_drain(now);
    }

    fn failed(&mut self, now: Duration, f: Failure) {
        match f {
            Failure::Fatal(msg) => self.stop(Stop::Fatal(msg)),
            Failure::InstanceFenced(_) => self.instance_fenced(now),
            Failure::Retriable(_) => {
                self.held = 0;
                self.held_work = false;
                self.active.clear();
                self.actions.push_back(Action::DiscardHeld);
                if self.s.mode == Mode::ExactlyOnce {
                    self.actions.push_back(Action::Abort);
                    self.phase = Phase::Aborting;
                    self.rewind_after_abort = true;
                } else {
                    self.phase = Phase::Idle;
                    self.rewind_all();
                    self.continue_drain(now);
                }
            }
        }
    }

    fn rewind_all(&mut self) {
        let parts: Vec<i32> = self.assigned.iter().copied().collect();
        // The positions go back to the committed offsets: the checkpoint
        // restored by the rewind says where each partition's state is.
        self.positions.clear();
        self.actions.push_back(Action::Rewind(parts));
    }

    /// The result of a [`Action::Abort`].
    pub fn aborted(&mut self, now: Duration, result: Result<(), Failure>) {
        if self.phase == Phase::Stopped {
            return;
        }
        if let Err(Failure::Fatal(msg)) = result {
            return self.stop(Stop::Fatal(msg));
        }
        self.phase = Phase::Idle;
        self.held = 0;
        self.held_work = false;
        if std::mem::take(&mut self.rewind_after_abort) {
            self.rewind_all();
        }
        self.continue_drain(now);
    }

    /// The result of a [`Action::Rewind`]: a transient failure is tried
    /// again at the next tick.
    pub fn rewound(&mut self, result: Result<(), Failure>) {
        if self.phase == Phase::Stopped {
            return;
        }
        match result {
            Ok(()) => {}
            Err(Failure::Fatal(msg)) => self.stop(Stop::Fatal(msg)),
            Err(Failure::InstanceFenced(_)) => {}
            Err(Failure::Retriable(_)) => self.rewind_pending = true,
        }
    }

    /// The result of a [`Action::Restore`].
    pub fn restored(&mut self, result: Result<(), Failure>) {
        if self.phase == Phase::Stopped {
            return;
        }
        match result {
            Ok(()) | Err(Failure::InstanceFenced(_)) => {}
            Err(Failure::Fatal(msg)) => self.stop(Stop::Fatal(msg)),
            // Restores retry transient errors themselves; one that still
            // fails stops the service rather than process without state.
            Err(Failure::Retriable(msg)) => self.stop(Stop::Fatal(msg)),
        }
    }

    /// Partitions were assigned: restore them before their input.
    pub fn assigned(&mut self, partitions: Vec<i32>) {
        if !partitions.is_empty() && self.phase != Phase::Stopped {
            self.assigned.extend(partitions.iter().copied());
            self.actions.push_back(Action::Restore(partitions));
        }
    }

    /// Partitions are being revoked: commit everything while they are still
    /// ours, then drop them. The shell performs the queued actions before
    /// returning from the rebalance callback.
    pub fn revoking(&mut self, now: Duration, partitions: Vec<i32>) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.draining = Some(Drain::Revoke(partitions));
        self.continue_drain(now);
    }

    /// Stop: commit what is open (abort if that fails), then stop.
    pub fn shutdown(&mut self, now: Duration) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.draining = Some(Drain::Shutdown);
        self.continue_drain(now);
    }

    /// Moves a drain (revocation, shutdown) on: commits immediately what is
    /// open, and once nothing is, drops the partitions or stops.
    fn continue_drain(&mut self, now: Duration) {
        if self.draining.is_none() {
            return;
        }
        match self.phase {
            Phase::Open => self.start_commit(now),
            Phase::Committing { .. } => {}
            Phase::Idle => match self.draining.take() {
                Some(Drain::Revoke(parts)) => {
                    for p in &parts {
                        self.assigned.remove(p);
                        self.positions.remove(p);
                        self.active.remove(p);
                    }
                    // A rewind of the revoked partitions is moot.
                    for a in self.actions.iter_mut() {
                        if let Action::Rewind(r) = a {
                            r.retain(|p| !parts.contains(p));
                        }
                    }
                    self.actions.push_back(Action::Drop(parts));
                }
                Some(Drain::Shutdown) => self.stop(Stop::Shutdown),
                None => {}
            },
            _ => return,
        }
        // A drain does not wait for the writes: the commit flushes them.
        if matches!(self.phase, Phase::Committing { .. }) {
            self.finish_commit();
        }
    }

    /// The group refused this instance's static id: abort what is open,
    /// drop every partition and rejoin with a new consumer — unless that
    /// happened too often, which means another instance runs with this id.
    pub fn instance_fenced(&mut self, now: Duration) {
        if self.phase == Phase::Stopped {
            return;
        }
        while self
            .rejoins
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.s.rejoin_window)
        {
            self.rejoins.pop_front();
        }
        self.rejoins.push_back(now);
        if self.rejoins.len() > self.s.rejoin_max {
            return self.stop(Stop::Fatal(format!(
                "the group fenced this instance's id {} times in {} s: is another instance running with this instance_id?",
                self.rejoins.len(),
                self.s.rejoin_window.as_secs()
            )));
        }
        // Whatever was queued (a rewind, a commit) is moot: the partitions go.
        self.actions.clear();
        self.actions.push_back(Action::DiscardHeld);
        if self.s.mode == Mode::ExactlyOnce && self.open() {
            self.actions.push_back(Action::Abort);
        }
        let parts: Vec<i32> = std::mem::take(&mut self.assigned).into_iter().collect();
        self.actions.push_back(Action::Drop(parts));
        self.actions.push_back(Action::Rejoin);
        self.positions.clear();
        self.active.clear();
        self.held = 0;
        self.held_work = false;
        self.rewind_after_abort = false;
        self.rewind_pending = false;
        self.draining = None;
        self.phase = Phase::Idle;
    }

    /// The service stops on an error the protocol did not see (a fatal
    /// poll error): abort what is open, then nothing more.
    pub fn halt(&mut self, why: String) {
        if self.phase == Phase::Stopped {
            return;
        }
        let abort = self.s.mode == Mode::ExactlyOnce && self.open();
        self.stop(Stop::Fatal(why));
        if abort {
            self.actions.push_front(Action::Abort);
        }
    }

    fn stop(&mut self, why: Stop) {
        // Nothing more is committed: what is open is aborted by the broker
        // (transaction timeout) or fenced by a successor.
        self.actions.clear();
        self.actions.push_back(Action::Stop(why));
        self.phase = Phase::Stopped;
        self.draining = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn eos() -> Protocol {
        let mut p = Protocol::new(
            Settings::new(Mode::ExactlyOnce, 100 * MS),
            1,
            Duration::ZERO,
        );
        p.assigned(vec![0, 1]);
        assert_eq!(p.poll_action(), Some(Action::Restore(vec![0, 1])));
        p
    }

    fn alo() -> Protocol {
        let mut p = Protocol::new(
            Settings::new(Mode::AtLeastOnce, 100 * MS),
            1,
            Duration::ZERO,
        );
        p.assigned(vec![0, 1]);
        assert_eq!(p.poll_action(), Some(Action::Restore(vec![0, 1])));
        p
    }

    /// Exactly-once, partition 0 read up to offset 5, its commit asked for.
    fn awaiting_commit() -> Protocol {
        let mut p = eos();
        p.consumed(0, 0, 5);
        p.tick(at(100), 0);
        p.tick(at(101), 0);
        let actions = drain(&mut p);
        assert!(matches!(actions.last(), Some(Action::Commit(_))));
        p
    }

    fn drain(p: &mut Protocol) -> Vec<Action> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn offsets(list: &[(i32, i64)]) -> Positions {
        list.iter().map(|&(p, o)| (p, vec![o])).collect()
    }

    fn cp(p: i32, next: i64) -> CheckpointAt {
        CheckpointAt {
            partition: p,
            next: vec![next],
        }
    }

    fn retriable() -> Failure {
        Failure::Retriable("broker gone".into())
    }

    #[test]
    fn the_first_input_opens_a_transaction_and_later_ones_do_not() {
        let mut p = eos();
        p.consumed(0, 0, 10);
        assert_eq!(drain(&mut p), [Action::Begin]);
        assert_eq!(p.phase(), &Phase::Open);
        p.consumed(0, 0, 11);
        p.consumed(1, 0, 3);
        assert!(drain(&mut p).is_empty());
        assert!(!p.hold(), "writes go straight into the open transaction");
    }

    #[test]
    fn at_the_interval_the_changelog_is_written_and_the_offsets_fixed() {
        let mut p = eos();
        p.consumed(0, 0, 10);
        drain(&mut p);
        p.tick(at(99), 5);
        assert!(drain(&mut p).is_empty(), "not due yet");
        p.tick(at(100), 5);
        assert_eq!(drain(&mut p), [Action::WriteChangelog(vec![cp(0, 11)])]);
        assert!(matches!(p.phase(), Phase::Committing { .. }));
        // Processing goes on; its writes are held and its offsets are not
        // part of the committing transaction.
        p.consumed(0, 0, 11);
        assert!(p.hold());
        p.tick(at(101), 3);
        assert!(drain(&mut p).is_empty(), "writes still in flight");
        p.tick(at(102), 0);
        assert_eq!(drain(&mut p), [Action::Commit(offsets(&[(0, 11)]))]);
        assert_eq!(p.phase(), &Phase::Finishing);
        p.committed(at(110), Ok(()));
        // The held writes open the next transaction.
        assert_eq!(drain(&mut p), [Action::Begin, Action::ReleaseHeld]);
        assert_eq!(p.phase(), &Phase::Open);
        // The next interval runs from the end of the commit.
        p.tick(at(209), 0);
        assert!(drain(&mut p).is_empty());
        p.tick(at(210), 0);
        assert_eq!(drain(&mut p), [Action::WriteChangelog(vec![cp(0, 12)])]);
    }

    #[test]
    fn a_commit_stops_waiting_for_acks_after_the_overlap_or_the_hold_limit() {
        let mut p = eos();
        p.consumed(0, 0, 1);
        p.tick(at(100), 1);
        drain(&mut p);
        p.tick(at(1099), 1);
        assert!(drain(&mut p).is_empty());
        p.tick(at(1100), 1);
        assert!(matches!(drain(&mut p)[..], [Action::Commit(_)]));

        let mut s = Settings::new(Mode::ExactlyOnce, 100 * MS);
        s.hold_limit = 2;
        let mut p = Protocol::new(s, 1, Duration::ZERO);
        p.assigned(vec![0]);
        p.consumed(0, 0, 1);
        p.tick(at(100), 1);
        drain(&mut p);
        assert!(p.hold());
        p.tick(at(101), 1);
        assert!(drain(&mut p).is_empty());
        assert!(p.hold());
        p.tick(at(102), 1);
        assert!(matches!(drain(&mut p)[..], [Action::Commit(_)]));
    }

    #[test]
    fn a_quiet_interval_commits_nothing() {
        let mut p = eos();
        p.tick(at(100), 0);
        p.tick(at(500), 0);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.phase(), &Phase::Idle);
        // A commit with nothing held leaves no transaction open.
        p.consumed(1, 0, 0);
        p.tick(at(600), 0);
        p.tick(at(601), 0);
        drain(&mut p);
        p.committed(at(602), Ok(()));
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.phase(), &Phase::Idle);
    }

    #[test]
    fn timers_fired_by_the_wall_clock_open_a_transaction_and_checkpoint_the_partition() {
        let mut p = eos();
        p.touched(1);
        assert_eq!(drain(&mut p), [Action::Begin]);
        p.tick(at(100), 0);
        assert_eq!(
            drain(&mut p),
            [Action::WriteChangelog(vec![CheckpointAt {
                partition: 1,
                next: vec![-1]
            }])]
        );
    }

    #[test]
    fn a_failed_commit_aborts_and_rewinds_every_partition() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        p.tick(at(100), 2);
        p.consumed(1, 0, 7);
        assert!(p.hold());
        p.tick(at(101), 0);
        drain(&mut p);
        p.committed(at(130), Err(retriable()));
        assert_eq!(drain(&mut p), [Action::DiscardHeld, Action::Abort]);
        assert_eq!(p.phase(), &Phase::Aborting);
        p.aborted(at(140), Ok(()));
        assert_eq!(drain(&mut p), [Action::Rewind(vec![0, 1])]);
        assert_eq!(p.phase(), &Phase::Idle);
        assert!(p.positions().is_empty(), "positions go back to the commit");
        // Processing resumes in a new transaction.
        p.consumed(0, 0, 5);
        assert_eq!(drain(&mut p), [Action::Begin]);
    }

    #[test]
    fn a_failed_rewind_is_tried_again_at_the_next_tick() {
        let mut p = awaiting_commit();
        p.committed(at(102), Err(retriable()));
        p.aborted(at(103), Ok(()));
        drain(&mut p);
        p.rewound(Err(retriable()));
        p.tick(at(104), 0);
        assert_eq!(drain(&mut p), [Action::Rewind(vec![0, 1])]);
        p.rewound(Ok(()));
        p.tick(at(105), 0);
        assert!(drain(&mut p).is_empty());
    }

    #[test]
    fn a_fenced_producer_stops_the_service() {
        let mut p = awaiting_commit();
        p.committed(
            at(102),
            Err(Failure::Fatal("fenced by a newer instance".into())),
        );
        assert_eq!(
            drain(&mut p),
            [Action::Stop(Stop::Fatal(
                "fenced by a newer instance".into()
            ))]
        );
        assert_eq!(p.phase(), &Phase::Stopped);
        // Nothing happens after a stop.
        p.consumed(0, 0, 6);
        p.shutdown(at(103));
        p.assigned(vec![3]);
        assert!(drain(&mut p).is_empty());
    }

    #[test]
    fn a_halt_aborts_what_is_open_and_ignores_the_results_that_follow() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        drain(&mut p);
        p.halt("not authorised to read the topic".into());
        assert_eq!(
            drain(&mut p),
            [
                Action::Abort,
                Action::Stop(Stop::Fatal("not authorised to read the topic".into()))
            ]
        );
        p.aborted(at(1), Ok(()));
        assert_eq!(p.phase(), &Phase::Stopped);
        p.revoking(at(2), vec![0, 1]);
        assert!(
            drain(&mut p).is_empty(),
            "a stopped protocol commits nothing"
        );

        let mut idle = eos();
        idle.halt("gone".into());
        assert_eq!(drain(&mut idle), [Action::Stop(Stop::Fatal("gone".into()))]);
    }

    #[test]
    fn a_fatal_abort_stops_the_service() {
        let mut p = awaiting_commit();
        p.committed(at(102), Err(retriable()));
        drain(&mut p);
        p.aborted(at(103), Err(Failure::Fatal("not authorised".into())));
        assert_eq!(
            drain(&mut p),
            [Action::Stop(Stop::Fatal("not authorised".into()))]
        );
    }

    #[test]
    fn a_revocation_during_an_open_transaction_commits_it_then_drops_the_partitions() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        p.consumed(1, 0, 9);
        drain(&mut p);
        p.revoking(at(50), vec![1]);
        assert_eq!(
            drain(&mut p),
            [
                Action::WriteChangelog(vec![cp(0, 6), cp(1, 10)]),
                Action::Commit(offsets(&[(0, 6), (1, 10)]))
            ]
        );
        p.committed(at(60), Ok(()));
        assert_eq!(drain(&mut p), [Action::Drop(vec![1])]);
        assert_eq!(p.partitions().iter().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(p.positions(), &offsets(&[(0, 6)]));
    }

    #[test]
    fn a_revocation_while_committing_commits_the_held_work_too() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        p.tick(at(100), 4);
        drain(&mut p);
        p.consumed(0, 0, 6);
        assert!(p.hold());
        p.revoking(at(101), vec![0, 1]);
        // The committing transaction does not wait for its acks.
        assert_eq!(drain(&mut p), [Action::Commit(offsets(&[(0, 6)]))]);
        p.committed(at(102), Ok(()));
        assert_eq!(
            drain(&mut p),
            [
                Action::Begin,
                Action::ReleaseHeld,
                Action::WriteChangelog(vec![cp(0, 7)]),
                Action::Commit(offsets(&[(0, 7)]))
            ]
        );
        p.committed(at(103), Ok(()));
        assert_eq!(drain(&mut p), [Action::Drop(vec![0, 1])]);
        assert!(p.partitions().is_empty());
    }

    #[test]
    fn a_revocation_whose_commit_fails_rewinds_only_the_partitions_kept() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        p.consumed(1, 0, 5);
        drain(&mut p);
        p.revoking(at(10), vec![1]);
        drain(&mut p);
        p.committed(at(11), Err(retriable()));
        assert_eq!(drain(&mut p), [Action::DiscardHeld, Action::Abort]);
        p.aborted(at(12), Ok(()));
        assert_eq!(
            drain(&mut p),
            [Action::Rewind(vec![0]), Action::Drop(vec![1])]
        );
    }

    #[test]
    fn a_revocation_with_nothing_open_only_drops() {
        let mut p = eos();
        p.revoking(at(10), vec![0, 1]);
        assert_eq!(drain(&mut p), [Action::Drop(vec![0, 1])]);
    }

    #[test]
    fn a_refused_static_id_aborts_drops_everything_and_rejoins() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        drain(&mut p);
        p.instance_fenced(at(10));
        assert_eq!(
            drain(&mut p),
            [
                Action::DiscardHeld,
                Action::Abort,
                Action::Drop(vec![0, 1]),
                Action::Rejoin
            ]
        );
        assert_eq!(p.phase(), &Phase::Idle);
        assert!(p.positions().is_empty() && p.partitions().is_empty());
        // The new consumer gets partitions again.
        p.assigned(vec![0]);
        assert_eq!(drain(&mut p), [Action::Restore(vec![0])]);
        p.consumed(0, 0, 3);
        assert_eq!(drain(&mut p), [Action::Begin]);
    }

    #[test]
    fn a_commit_that_fails_because_the_static_id_was_taken_rejoins_without_rewinding() {
        let mut p = awaiting_commit();
        p.committed(
            at(102),
            Err(Failure::InstanceFenced("static id taken".into())),
        );
        let actions = drain(&mut p);
        assert_eq!(actions.last(), Some(&Action::Rejoin));
        assert!(!actions.iter().any(|a| matches!(a, Action::Rewind(_))));
    }

    #[test]
    fn too_many_rejoins_in_the_window_stop_the_service() {
        let mut p = eos();
        for i in 0..5 {
            p.instance_fenced(at(i * 1000));
            assert_eq!(drain(&mut p).last(), Some(&Action::Rejoin));
        }
        p.instance_fenced(at(5000));
        assert!(matches!(drain(&mut p)[..], [Action::Stop(Stop::Fatal(_))]));

        // Spread over more than the window, they are allowed.
        let mut p = eos();
        for i in 0..10 {
            p.instance_fenced(at(i * 200_000));
            assert_eq!(drain(&mut p).last(), Some(&Action::Rejoin), "rejoin {i}");
        }
    }

    #[test]
    fn shutdown_commits_what_is_open_then_stops() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        drain(&mut p);
        p.shutdown(at(10));
        assert_eq!(
            drain(&mut p),
            [
                Action::WriteChangelog(vec![cp(0, 6)]),
                Action::Commit(offsets(&[(0, 6)]))
            ]
        );
        p.committed(at(11), Ok(()));
        assert_eq!(drain(&mut p), [Action::Stop(Stop::Shutdown)]);
    }

    #[test]
    fn shutdown_whose_commit_fails_aborts_then_stops_without_rewinding() {
        let mut p = eos();
        p.consumed(0, 0, 5);
        drain(&mut p);
        p.shutdown(at(10));
        drain(&mut p);
        p.committed(at(11), Err(retriable()));
        assert_eq!(drain(&mut p), [Action::DiscardHeld, Action::Abort]);
        p.aborted(at(12), Ok(()));
        assert_eq!(drain(&mut p), [Action::Stop(Stop::Shutdown)]);
    }

    #[test]
    fn at_least_once_flushes_changes_then_state_then_commits_offsets() {
        let mut p = alo();
        p.consumed(0, 0, 5);
        assert!(drain(&mut p).is_empty(), "no transaction to begin");
        assert!(!p.hold());
        p.tick(at(100), 3);
        assert_eq!(drain(&mut p), [Action::Flush]);
        p.flushed(at(101), Ok(()));
        assert_eq!(
            drain(&mut p),
            [Action::WriteChangelog(vec![cp(0, 6)]), Action::Flush]
        );
        p.flushed(at(102), Ok(()));
        assert_eq!(drain(&mut p), [Action::CommitOffsets(offsets(&[(0, 6)]))]);
        p.committed(at(103), Ok(()));
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.phase(), &Phase::Idle);
    }

    #[test]
    fn at_least_once_rewinds_without_an_abort_when_a_write_is_lost() {
        let mut p = alo();
        p.consumed(1, 0, 5);
        p.tick(at(100), 3);
        drain(&mut p);
        p.flushed(at(101), Err(retriable()));
        assert_eq!(
            drain(&mut p),
            [Action::DiscardHeld, Action::Rewind(vec![0, 1])]
        );
        assert_eq!(p.phase(), &Phase::Idle);

        let mut p = alo();
        p.consumed(1, 0, 5);
        p.tick(at(100), 0);
        p.flushed(at(101), Ok(()));
        p.flushed(at(102), Ok(()));
        drain(&mut p);
        p.committed(at(103), Err(retriable()));
        assert_eq!(
            drain(&mut p),
            [Action::DiscardHeld, Action::Rewind(vec![0, 1])]
        );
    }

    #[test]
    fn at_least_once_refused_static_id_rejoins_without_an_abort() {
        let mut p = alo();
        p.consumed(1, 0, 5);
        p.instance_fenced(at(1));
        assert_eq!(
            drain(&mut p),
            [
                Action::DiscardHeld,
                Action::Drop(vec![0, 1]),
                Action::Rejoin
            ]
        );
    }

    #[test]
    fn positions_follow_each_input_topic() {
        let mut p = Protocol::new(
            Settings::new(Mode::ExactlyOnce, 100 * MS),
            2,
            Duration::ZERO,
        );
        p.assigned(vec![0]);
        p.consumed(0, 1, 40);
        p.consumed(0, 0, 7);
        p.consumed(0, 1, 41);
        assert_eq!(p.positions().get(&0), Some(&vec![8, 42]));
    }

    #[test]
    fn the_wait_ends_at_the_next_commit_and_is_short_while_committing() {
        let mut p = eos();
        assert_eq!(p.wait(at(30)), at(70));
        assert_eq!(p.wait(at(150)), Duration::ZERO);
        p.consumed(0, 0, 1);
        p.tick(at(100), 1);
        assert_eq!(p.wait(at(100)), at(2));
    }
}
