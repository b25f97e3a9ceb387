//! The service as its own process, on a real broker, killed at random
//! moments while events flow: exactly-once output stays exact; at-least-once
//! loses nothing and repeats only identical changes; broker crashes are
//! ridden out without a restart of the service.

mod broker;

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use broker::scenario::{
    assert_exact, feed, finish, output, setup_with, sigkill, spawn, Keying, Setup,
};
use broker::Broker;
use leadscore::gen::Rng;

/// Some leads ask to be erased (a `lead_erased` of theirs, some of their
/// events within the window after it): the changelog then holds
/// tombstones and markers, and the output must stay exact.
const ERASE_RATE: f64 = 0.001;

fn setup(b: &Broker, name: &str, guarantee: &str, n: u64, seed: u64) -> Setup {
    let s = setup_with(b, name, guarantee, n, seed, Keying::Lead, ERASE_RATE);
    assert!(
        s.expected
            .values()
            .flatten()
            .any(|c| c["kind"] == "lead_erased"),
        "the stream erases some leads"
    );
    s
}

#[test]
fn exactly_once_survives_twenty_sigkills() {
    let b = Broker::shared();
    let s = setup(b, "crash-eos", "exactly_once", 20_000, 21);
    let feeder = feed(b, &s, Duration::from_secs(40));
    let mut rng = Rng::new(5);
    for _ in 0..20 {
        let mut c = spawn(&s);
        thread::sleep(Duration::from_millis(700 + rng.below(2300)));
        sigkill(&mut c);
    }
    feeder.join().unwrap();
    finish(b, &s, spawn(&s));
    assert_exact(b, &s);
}

/// A topic keyed by another id per lead (so that one lead's messages stay in
/// one input partition whatever instance routes them), re-keyed through the
/// repartition topic: routing writes, scoring writes and both sets of
/// offsets commit together, so the output stays exact across kills.
#[test]
fn exactly_once_survives_sigkills_on_a_re_keyed_topic() {
    let b = Broker::shared();
    let s = setup_with(
        b,
        "crash-rekey",
        "exactly_once",
        12_000,
        24,
        Keying::Account,
        ERASE_RATE,
    );
    let feeder = feed(b, &s, Duration::from_secs(25));
    let mut rng = Rng::new(8);
    for _ in 0..10 {
        let mut c = spawn(&s);
        thread::sleep(Duration::from_millis(700 + rng.below(2300)));
        sigkill(&mut c);
    }
    feeder.join().unwrap();
    finish(b, &s, spawn(&s));
    assert_exact(b, &s);
}

#[test]
fn exactly_once_rides_out_broker_crashes() {
    let b = &Broker::start();
    let s = setup(b, "broker-crash", "exactly_once", 12_000, 22);
    broker_crashes(b, &s, 6);
}

/// The same on a topic without keys, re-keyed: while the broker is down the
/// router cannot confirm a partition's end, and waits for it rather than
/// route the other partitions' newer messages first.
#[test]
fn exactly_once_rides_out_broker_crashes_on_a_re_keyed_topic() {
    let b = &Broker::start();
    let s = setup_with(
        b,
        "broker-crash-rekey",
        "exactly_once",
        12_000,
        25,
        Keying::Null,
        ERASE_RATE,
    );
    broker_crashes(b, &s, 9);
}

fn broker_crashes(b: &Broker, s: &Setup, seed: u64) {
    let mut c = spawn(s);
    let feeder = feed(b, s, Duration::from_secs(30));
    let mut rng = Rng::new(seed);
    for i in 0..3 {
        thread::sleep(Duration::from_millis(3000 + rng.below(4000)));
        b.kill();
        // The last outage outlasts the consumer's session timeout (10 s):
        // the group then drops the member, and librdkafka may find its own
        // static id fenced when it rejoins.
        let down = if i == 2 {
            11_000
        } else {
            500 + rng.below(2000)
        };
        thread::sleep(Duration::from_millis(down));
        b.restart();
        assert!(
            c.try_wait().unwrap().is_none(),
            "the service rides out a broker crash"
        );
    }
    feeder.join().unwrap();
    finish(b, s, c);
    assert_exact(b, s);
}

#[test]
fn at_least_once_loses_nothing_and_repeats_identically() {
    let b = Broker::shared();
    let s = setup(b, "crash-alo", "at_least_once", 12_000, 23);
    let feeder = feed(b, &s, Duration::from_secs(25));
    let mut rng = Rng::new(7);
    for _ in 0..20 {
        let mut c = spawn(&s);
        thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        sigkill(&mut c);
    }
    feeder.join().unwrap();
    finish(b, &s, spawn(&s));
    let got = output(b, &s);
    for (lead, want) in &s.expected {
        let have = got.get(lead).map(Vec::as_slice).unwrap_or_default();
        // Each change present; a repeat carries the same change_id and the same bytes.
        let mut by_id: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for (v, bytes) in have {
            let id = v["change_id"].as_str().unwrap();
            if let Some(prev) = by_id.insert(id, bytes) {
                assert_eq!(
                    prev,
                    &bytes[..],
                    "{lead}: a repeated {id} is byte-identical"
                );
            }
        }
        let mut distinct: Vec<&serde_json::Value> = Vec::new();
        for (v, _) in have {
            if !distinct.iter().any(|d| d["change_id"] == v["change_id"]) {
                distinct.push(v);
            }
        }
        distinct.sort_by_key(|v| v["sequence"].as_u64());
        assert_eq!(
            distinct,
            want.iter().collect::<Vec<_>>(),
            "{lead}: every change present"
        );
    }
}
