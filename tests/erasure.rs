//! Erasure on the real broker: `leadscore erase` reaches the service, whose
//! changelog then holds no record of the erased lead's profile once the
//! compacted topic is cleaned (the score topic gets a tombstone too); after a SIGKILL and a restart the lead is
//! not restored, and redelivered or new events within the window do not
//! bring it back.

mod broker;

use std::process::Command;
use std::time::Duration;

use broker::scenario::{sigkill, spawn_config};
use broker::{produce, read_all, wait_until, Broker, Record};
use leadscore::time::{parse_rfc3339, Micros, DAY, HOUR};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

const PARTITIONS: i32 = 2;
/// Only E-1's profile holds it: its bytes in a changelog record are E-1's state.
const EMAIL: &str = "erase-me-7f3a@example.com";

fn t0() -> Micros {
    parse_rfc3339("2026-03-02T14:00:00Z").unwrap()
}

fn event(
    id: &str,
    lead: &str,
    ty: &str,
    at: Micros,
    profile: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut v = serde_json::json!({
        "event_id": id, "lead_id": lead, "type": ty,
        "occurred_at": leadscore::time::format_rfc3339(at),
    });
    if let Some(p) = profile {
        v["profile"] = p;
    }
    if ty == "page_view" {
        v["attributes"] = serde_json::json!({"url": "/pricing"});
    }
    serde_json::to_vec(&v).unwrap()
}

/// Fit 20 + demo 20 + webinar 15 = 55: an MQL at `at`.
fn mql(lead: &str, email: &str, at: Micros) -> Vec<(Option<i32>, Vec<u8>, Vec<u8>)> {
    let profile = serde_json::json!({
        "email": email, "company": "Acme", "employees": 300, "industry": "food",
        "job_title": "Operations Manager", "country": "NL",
    });
    [
        event(
            &format!("{lead}-p"),
            lead,
            "profile_updated",
            at,
            Some(profile),
        ),
        event(&format!("{lead}-d"), lead, "demo_requested", at, None),
        event(&format!("{lead}-w"), lead, "webinar_attended", at, None),
    ]
    .into_iter()
    .map(|v| (None, lead.as_bytes().to_vec(), v))
    .collect()
}

fn status(b: &Broker, topic: &str) -> Vec<serde_json::Value> {
    read_all(
        &b.bootstrap,
        topic,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .iter()
    .map(|r| serde_json::from_slice(&r.payload).unwrap())
    .collect()
}

fn changelog(b: &Broker, topic: &str) -> Vec<Record> {
    read_all(
        &b.bootstrap,
        topic,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
}

fn holds_email(r: &Record) -> bool {
    r.payload
        .windows(EMAIL.len())
        .any(|w| w == EMAIL.as_bytes())
}

/// Waits until the broker's metadata shows every topic with its
/// partitions (a topic just created may not be known to every request yet,
/// and the service stops when one is missing).
fn wait_for_topics(b: &Broker, topics: &[&str]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = b.client().create().unwrap();
    wait_until(
        "the topics in the metadata",
        Duration::from_secs(30),
        || {
            topics.iter().all(|t| {
                c.fetch_metadata(Some(t), Duration::from_secs(5))
                    .is_ok_and(|m| {
                        m.topics()
                            .first()
                            .is_some_and(|x| x.error().is_none() && !x.partitions().is_empty())
                    })
            })
        },
    );
}

#[test]
fn an_erased_lead_leaves_no_profile_in_the_compacted_changelog_and_does_not_come_back() {
    let b = Broker::shared();
    let name = "erasure";
    let (input, status_topic, dlq, log_topic) = (
        format!("{name}-events"),
        format!("{name}-status"),
        format!("{name}-dlq"),
        format!("{name}-changelog"),
    );
    b.create_topic(&input, PARTITIONS, false);
    b.create_topic(&status_topic, PARTITIONS, false);
    b.create_topic(&dlq, 1, false);
    // The changelog, made by the test with a cleaner that acts at once:
    // segments roll every 200 ms, any dirty share is cleaned, tombstones
    // are kept a minute (so the test sees them).
    let admin: AdminClient<DefaultClientContext> = b.client().create().unwrap();
    let t = NewTopic::new(&log_topic, PARTITIONS, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "200")
        .set("min.cleanable.dirty.ratio", "0.001")
        .set("min.compaction.lag.ms", "0")
        .set("delete.retention.ms", "60000");
    for r in leadscore::service::kafka::block_on(admin.create_topics([&t], &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("leadscore.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{input}"]
status_topic = "{status_topic}"
dead_letter_topic = "{dlq}"
score_topic = "{name}-scores"
idle_advance_ms = 0

[http]
listen = "127.0.0.1:0"
"#,
            b.bootstrap
        ),
    )
    .unwrap();
    let producer = b.producer();
    wait_for_topics(b, &[&input, &status_topic, &dlq, &log_topic]);
    let mut svc = spawn_config(&config, None);
    let mut batch = mql("E-1", EMAIL, t0());
    batch.extend(mql("K-1", "k@example.org", t0()));
    produce(&producer, &input, &batch);
    wait_until("both MQLs", Duration::from_secs(90), || {
        status(b, &status_topic).len() >= 2
    });
    wait_until(
        "E-1's state in the changelog",
        Duration::from_secs(30),
        || changelog(b, &log_topic).iter().any(holds_email),
    );

    // The operator erases E-1.
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "erase",
            "--config",
            config.to_str().unwrap(),
            "--lead",
            "E-1",
        ])
        .args(["--reason", "request 2026-117", "--at"])
        .arg(leadscore::time::format_rfc3339(t0() + DAY))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the lead_erased record", Duration::from_secs(60), || {
        status(b, &status_topic)
            .iter()
            .any(|v| v["kind"] == "lead_erased" && v["lead_id"] == "E-1")
    });
    let erased = status(b, &status_topic)
        .into_iter()
        .find(|v| v["kind"] == "lead_erased")
        .unwrap();
    assert_eq!(erased["change_id"], "E-1:1:erased");
    assert_eq!(erased["stage"], "mql");
    assert_eq!(erased["reason"], "request 2026-117");
    assert_eq!(
        erased["erased_at"],
        leadscore::time::format_rfc3339(t0() + DAY)
    );
    // The score topic: E-1's record, then its tombstone; K-1's stays.
    let scores = changelog(b, &format!("{name}-scores"));
    let last_of = |id: &[u8]| {
        scores
            .iter()
            .rev()
            .find(|r| r.key == id)
            .map(|r| r.payload.clone())
    };
    assert_eq!(last_of(b"E-1"), Some(Vec::new()), "a tombstone for E-1");
    assert!(last_of(b"K-1").is_some_and(|p| !p.is_empty()));
    assert!(scores
        .iter()
        .any(|r| r.key == b"E-1" && !r.payload.is_empty()));
    // The changelog: E-1's last record is a tombstone. Later records (K-1's
    // events, one a second) roll segments; the cleaner then removes every
    // earlier record of E-1, the ones that held its profile.
    let mut n = 0;
    wait_until(
        "the cleaner to remove E-1's profile from the changelog",
        Duration::from_secs(120),
        || {
            n += 1;
            produce(
                &producer,
                &input,
                &[(
                    None,
                    b"K-1".to_vec(),
                    event(
                        &format!("K-1-v{n}"),
                        "K-1",
                        "page_view",
                        t0() + DAY + n * HOUR / 10,
                        None,
                    ),
                )],
            );
            std::thread::sleep(Duration::from_millis(900));
            let records = changelog(b, &log_topic);
            let of_e: Vec<&Record> = records.iter().filter(|r| r.key == b"E-1").collect();
            !records.iter().any(holds_email) && of_e.last().is_some_and(|r| r.payload.is_empty())
        },
    );

    // SIGKILL, restart: E-1 is not restored, and neither a redelivered
    // event (its demo, same id) nor a new one within the 30-day window
    // brings it back; K-1 goes on (sales accept it: sql).
    sigkill(&mut svc);
    let _svc = spawn_config(&config, None);
    let later = t0() + 2 * DAY;
    produce(
        &producer,
        &input,
        &[
            (
                None,
                b"E-1".to_vec(),
                event("E-1-d", "E-1", "demo_requested", t0(), None),
            ),
            (
                None,
                b"E-1".to_vec(),
                event("E-1-again", "E-1", "webinar_attended", later, None),
            ),
            (None, b"E-1".to_vec(), mql("E-1", EMAIL, later)[0].2.clone()),
            (
                None,
                b"K-1".to_vec(),
                event("K-1-sa", "K-1", "sales_accepted", later, None),
            ),
        ],
    );
    wait_until("K-1's sql", Duration::from_secs(90), || {
        status(b, &status_topic)
            .iter()
            .any(|v| v["lead_id"] == "K-1" && v["to"] == "sql")
    });
    let of_e: Vec<serde_json::Value> = status(b, &status_topic)
        .into_iter()
        .filter(|v| v["lead_id"] == "E-1")
        .collect();
    let kinds: Vec<(&str, &str)> = of_e
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap(),
                v["change_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("stage_changed", "E-1:1"), ("lead_erased", "E-1:1:erased")],
        "nothing of E-1 after its erasure"
    );
    let records = changelog(b, &log_topic);
    let of_e: Vec<&Record> = records.iter().filter(|r| r.key == b"E-1").collect();
    assert!(
        of_e.last().is_some_and(|r| r.payload.is_empty()),
        "E-1's last changelog record is still its tombstone"
    );
    assert!(
        !records.iter().any(holds_email),
        "no record holds E-1's profile"
    );
}

/// A Segment topic keyed by visitor: the visitor that identified as the
/// lead lives in another partition's engine. The erasure (on a native topic
/// of the CRM's) reaches it through the repartition topic: its changelog
/// record gets a tombstone too.
#[test]
fn an_erasure_drops_the_lead_s_visitor_in_another_partition() {
    let b = Broker::shared();
    let name = "erasure-visitor";
    let partitions = 4;
    let (seg, crm, status_topic, dlq) = (
        format!("{name}-segment"),
        format!("{name}-crm"),
        format!("{name}-status"),
        format!("{name}-dlq"),
    );
    for t in [&seg, &crm, &status_topic] {
        b.create_topic(t, partitions, false);
    }
    b.create_topic(&dlq, 1, false);
    let lead = "L-9";
    let part =
        |id: &str| leadscore::service::rekey::partition_for(id.as_bytes(), partitions as usize);
    let anon = (0..)
        .map(|i| format!("anon-{i}"))
        .find(|a| part(a) != part(lead))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("leadscore.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{seg}", "{crm}"]
status_topic = "{status_topic}"
dead_letter_topic = "{dlq}"
idle_advance_ms = 0

[input.topics."{seg}"]
format = "segment"

[http]
listen = "127.0.0.1:0"
"#,
            b.bootstrap
        ),
    )
    .unwrap();
    wait_for_topics(b, &[&seg, &crm, &status_topic, &dlq]);
    let _svc = spawn_config(&config, None);
    let at = |t: Micros| leadscore::time::format_rfc3339(t);
    let page = serde_json::json!({
        "type": "page", "anonymousId": anon, "messageId": "m1",
        "timestamp": at(t0()), "properties": {"url": "https://x.io/pricing"},
    });
    let identify = serde_json::json!({
        "type": "identify", "anonymousId": anon, "userId": lead, "messageId": "m2",
        "timestamp": at(t0() + HOUR),
        "traits": {"email": "v@acme.nl", "company": "Acme", "employees": 300, "industry": "food"},
    });
    produce(
        &b.producer(),
        &seg,
        &[
            (
                None,
                anon.as_bytes().to_vec(),
                serde_json::to_vec(&page).unwrap(),
            ),
            (
                None,
                anon.as_bytes().to_vec(),
                serde_json::to_vec(&identify).unwrap(),
            ),
        ],
    );
    let log_topic = format!("{name}-changelog");
    let visitor_key = [&[0u8, b'v'][..], anon.as_bytes()].concat();
    let last = |key: &[u8]| {
        changelog(b, &log_topic)
            .into_iter()
            .rev()
            .find(|r| r.key == key)
            .map(|r| r.payload)
    };
    wait_until(
        "the linked visitor in the changelog",
        Duration::from_secs(90),
        || {
            last(&visitor_key).is_some_and(|p| !p.is_empty())
                && last(lead.as_bytes()).is_some_and(|p| !p.is_empty())
        },
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "erase",
            "--config",
            config.to_str().unwrap(),
            "--lead",
            lead,
        ])
        .args(["--topic", &crm, "--at"])
        .arg(at(t0() + DAY))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "tombstones for the lead and its visitor",
        Duration::from_secs(90),
        || last(lead.as_bytes()) == Some(Vec::new()) && last(&visitor_key) == Some(Vec::new()),
    );
}
