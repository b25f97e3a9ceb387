//! Three instances on a real broker answer for every lead: `GET
//! /leads/{id}` on any instance reaches the instance that owns the lead
//! (found through the instance registry and the producers' partitioner),
//! and `GET /leads` merges every instance's call list into the one that
//! `leadscore score` and `explain` give offline. The token guards every instance, forwarded
//! requests included.

mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use broker::scenario::{setup, total, Service, PARTITIONS};
use broker::{produce, read_all, wait_until, Broker};
use serde_json::Value;

const TOKEN: &str = "cluster-test-token";

/// A free port on 127.0.0.1 (free when asked; the service binds it soon after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = agent.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("an answer");
    let code = resp.status().as_u16();
    (code, resp.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn every_instance_answers_for_every_lead_and_the_same_call_list() {
    let b = Broker::shared();
    let s = setup(b, "cluster", "exactly_once", 4_000, 61);
    // The test's producer is librdkafka's, with its default partitioner.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[kafka]\n",
        "[kafka]\npartitioner = \"consistent_random\"\n",
    );
    std::fs::write(&s.config, text).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let log = |i: usize| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.config.with_file_name(format!("service-{i}.log")))
            .unwrap()
    };
    let _instances: Vec<Service> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Service::from(
                std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
                    .args(["run", "--config", s.config.to_str().unwrap()])
                    .env("LEADSCORE_KAFKA_INSTANCE_ID", format!("cluster-{i}"))
                    .env("LEADSCORE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
                    .env("LEADSCORE_HTTP_TOKEN", TOKEN)
                    .stdout(std::process::Stdio::null())
                    .stderr(log(i))
                    .spawn()
                    .expect("start leadscore run"),
            )
        })
        .collect();
    produce(&b.producer(), &s.input, &s.events);
    wait_until("every change", Duration::from_secs(180), || {
        read_all(
            &b.bootstrap,
            &s.status,
            Duration::from_millis(500),
            Duration::from_secs(20),
        )
        .len()
            >= total(&s)
    });
    // Every instance knows every partition's owner, and all three own
    // some (the group has settled).
    let list = "/leads?stage=mql,sql&limit=1000";
    wait_until("a complete call list", Duration::from_secs(60), || {
        ports.iter().all(|&p| {
            let (code, body) = get(p, list, Some(TOKEN));
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            code == 200 && v["complete"] == true && v["instances"] == 3
        })
    });

    // The stage of each lead, per `score`.
    let stage_of: BTreeMap<&str, &str> = s
        .expected
        .iter()
        .filter_map(|(id, c)| {
            // SLA breaches are records of another kind.
            let last = c.iter().rev().find(|c| c["kind"] == "stage_changed")?;
            Some((id.as_str(), last["to"].as_str().unwrap()))
        })
        .collect();
    let mut leads: BTreeSet<String> = s
        .events
        .iter()
        .map(|(_, k, _)| String::from_utf8(k.clone()).unwrap())
        .filter(|id| !id.starts_with("tick-"))
        .collect();
    assert!(
        leads.len() > stage_of.len(),
        "some leads never changed stage"
    );
    let mut owners = BTreeSet::new();
    for id in std::mem::take(&mut leads) {
        let want = stage_of.get(id.as_str()).copied().unwrap_or("lead");
        for &port in &ports {
            let (code, body) = get(port, &format!("/leads/{id}"), Some(TOKEN));
            assert_eq!(code, 200, "GET /leads/{id} on :{port}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["lead_id"], id.as_str());
            assert_eq!(v["stage"], want, "{id} on :{port}");
            owners.insert(v["partition"].as_i64().unwrap());
        }
    }
    assert_eq!(
        owners.len(),
        PARTITIONS as usize,
        "leads of every partition"
    );
    // Without the token, or with a wrong one, nothing is forwarded or shown.
    let some = stage_of.keys().next().unwrap();
    for &port in &ports {
        assert_eq!(get(port, &format!("/leads/{some}"), None).0, 401);
        assert_eq!(get(port, list, Some("wrong")).0, 401);
    }

    // The call list: the same on every instance, the leads `score` leaves in
    // mql or sql, highest total first.
    let lists: Vec<Value> = ports
        .iter()
        .map(|&p| {
            let (code, body) = get(p, list, Some(TOKEN));
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect();
    for l in &lists[1..] {
        assert_eq!(l["leads"], lists[0]["leads"], "every instance, one list");
    }
    let listed: Vec<&Value> = lists[0]["leads"].as_array().unwrap().iter().collect();
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|e| e["lead_id"].as_str().unwrap())
        .collect();
    let handed_off: BTreeSet<&str> = stage_of
        .iter()
        .filter(|(_, to)| matches!(**to, "mql" | "sql"))
        .map(|(id, _)| *id)
        .collect();
    assert!(!handed_off.is_empty());
    assert_eq!(ids, handed_off, "the call list holds the mql and sql leads");
    // Each lead's total and band at the list's time are `leadscore explain`'s
    // at that time, and the order is theirs: highest total first, ties by id.
    let at = lists[0]["at"].as_str().expect("the list's time");
    let events = s.config.with_file_name("events.jsonl");
    let mut want: Vec<(f64, &str)> = Vec::new();
    for e in &listed {
        let id = e["lead_id"].as_str().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
            .args(["explain", "--lead", id, "--at", at, "--input"])
            .arg(&events)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let x: Value = serde_json::from_slice(&out.stdout).unwrap();
        let total = x["score"]["total"].as_f64().unwrap();
        assert!(
            (e["total"].as_f64().unwrap() - total).abs() < 1e-9,
            "{id}: list {} explain {total}",
            e["total"]
        );
        assert_eq!(e["band"], x["band"], "{id}");
        assert_eq!(e["stage"], x["stage"], "{id}");
        want.push((total, id));
    }
    want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let order: Vec<&str> = listed
        .iter()
        .map(|e| e["lead_id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, want, "highest total first, ties by lead id");
}
