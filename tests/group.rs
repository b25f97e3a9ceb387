//! Several instances in one consumer group on a real broker: instances join
//! and leave while events flow, and a paused zombie with the same
//! `instance_id` as its replacement is fenced and writes nothing.

mod broker;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use broker::scenario::{
    assert_exact, feed, finish, setup, setup_keyed, sigterm, spawn_as, total, Keying,
};
use broker::{read_all, Broker};

#[test]
fn instances_join_and_leave_while_events_flow_with_every_change_once() {
    join_and_leave("group", 31, Keying::Lead);
}

/// A topic without keys: each lead's events are spread over every
/// partition, and while several instances run, each routes its own
/// partitions and every repartition partition interleaves their output.
/// Each repartition partition folds in the routers' common order (the
/// record timestamps), so the changes are exact through joins and leaves.
#[test]
fn instances_join_and_leave_on_a_topic_without_keys_with_every_change_once() {
    join_and_leave("group-null", 33, Keying::Null);
}

fn join_and_leave(name: &str, seed: u64, keying: Keying) {
    let b = Broker::shared();
    let s = setup_keyed(b, name, "exactly_once", 16_000, seed, keying);
    let mut a = spawn_as(&s, &format!("{name}-a"));
    let mut bb = spawn_as(&s, &format!("{name}-b"));
    let feeder = feed(b, &s, Duration::from_secs(30));
    thread::sleep(Duration::from_secs(8));
    let c = spawn_as(&s, &format!("{name}-c"));
    thread::sleep(Duration::from_secs(8));
    let st = sigterm(&mut a);
    assert!(st.success(), "a leaving instance exits 0, got {st}");
    feeder.join().unwrap();
    // b stops once c has finished the stream (each change checked once below).
    finish(b, &s, c);
    let st = sigterm(&mut bb);
    assert!(st.success(), "instance b exits 0, got {st}");
    assert_exact(b, &s);
}

#[test]
fn a_paused_zombie_is_fenced_by_its_replacement_and_writes_nothing() {
    let b = Broker::shared();
    let s = setup(b, "zombie", "exactly_once", 10_000, 32);
    let mut zombie = spawn_as(&s, "zombie-0");
    let feeder = feed(b, &s, Duration::from_secs(20));
    thread::sleep(Duration::from_secs(5));
    let pid = zombie.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // Its replacement, with the same instance_id: fences the zombie's
    // producer (transactional.id) and its group membership (group.instance.id).
    let replacement = spawn_as(&s, "zombie-0");
    thread::sleep(Duration::from_secs(8));
    let before = read_all(
        &b.bootstrap,
        &s.status,
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .len();
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    // The zombie finds it was fenced at its next transaction and stops with an error.
    let start = Instant::now();
    let status = loop {
        if let Some(st) = zombie.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the fenced zombie did not stop"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a fenced instance exits non-zero");
    feeder.join().unwrap();
    assert!(before <= total(&s));
    finish(b, &s, replacement);
    assert_exact(b, &s);
}

/// librdkafka treats a refused static id as fatal for the consumer: after a
/// broker outage it can even be refused its own id. Here another client takes
/// the instance id for a moment (consumer only: no producer, so nothing is
/// fenced for writing); the service must take its membership back and carry
/// on, with every change exactly once.
#[test]
fn an_instance_whose_static_id_was_taken_rejoins_and_stays_exact() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let b = Broker::shared();
    let s = setup(b, "refenced", "exactly_once", 10_000, 33);
    let mut service = spawn_as(&s, "refenced-0");
    let feeder = feed(b, &s, Duration::from_secs(20));
    thread::sleep(Duration::from_secs(6));
    let intruder: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("group.id", "refenced")
        .set("group.instance.id", "refenced-0")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    intruder.subscribe(&[s.input.as_str()]).unwrap();
    let start = Instant::now();
    while intruder.assignment().unwrap().count() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "intruder not assigned"
        );
        intruder.poll(Duration::from_millis(100));
    }
    drop(intruder);
    thread::sleep(Duration::from_secs(3));
    assert!(
        service.try_wait().unwrap().is_none(),
        "the service takes its static id back instead of stopping"
    );
    feeder.join().unwrap();
    finish(b, &s, service);
    assert_exact(b, &s);
}
