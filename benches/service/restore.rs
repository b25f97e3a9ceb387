//! Phase 3: restoring the engine from the changelog after a run over a
//! stream with about a million distinct leads: a fresh instance's time to
//! `/readyz`, next to reading the changelog without decoding it.

use std::thread;
use std::time::Duration;

use leadscore::gen::{GenConfig, Generator};

use crate::broker::Broker;
use crate::machine::Cpu;
use crate::svc::{config, start_service, Counters};
use crate::throughput::{report_throughput, service_throughput};
use crate::{produce, Report, Settings};

pub fn restore_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== 3. restore: {} events over up to {} leads",
        s.restore_events, s.restore_leads
    );
    let rinput = produce(
        b,
        "bench-restore-events",
        s.partitions,
        Generator::new(GenConfig {
            seed: s.seed + 2,
            leads: s.restore_leads,
            events: s.restore_events,
            late_rate: 0.0,
            ..GenConfig::default()
        }),
    );
    r.line(format!(
        "restore input: {} events over {} distinct leads",
        rinput.total, rinput.distinct_leads
    ));
    let cpu = Cpu::now(b);
    let t = service_throughput(b, s, &rinput, "bench-restore", "exactly_once");
    let ok = report_throughput(r, "service exactly_once (restore input)", &rinput, &t);
    if t.secs.is_finite() {
        r.line(format!(
            "service exactly_once (restore input):   {}",
            cpu.since(b, t.secs)
        ));
    }
    if ok.is_some() {
        let cfg = config(
            b,
            "bench-restore",
            &rinput.topic,
            "bench-restore-status",
            "exactly_once",
            "idle_advance_ms = 0",
        );
        let changelog = cfg.changelog_topic();
        let records: i64 = b
            .watermarks(&changelog, s.partitions)
            .iter()
            .map(|(l, h)| h - l)
            .sum();
        for (what, extra) in [
            ("the restore reader's settings", &[][..]),
            (
                "the same and fetch.wait.max.ms=10",
                &[("fetch.wait.max.ms", "10")][..],
            ),
        ] {
            let read = b.read_to_end(&changelog, s.partitions, extra);
            let (n, to_last, to_eof) = (read.records, read.to_last, read.to_eof);
            r.line(format!(
                "changelog read only (no decoding), {what}, {} partitions one after another: {n} records, {to_last:.2} s to the last record, {to_eof:.2} s to end-of-partition ({:.0} records/s)",
                s.partitions,
                n as f64 / to_eof
            ));
        }
        r.line(format!(
            "changelog: {records} offsets (records + transaction markers) over {} partitions",
            s.partitions
        ));
        // Leads in the changelog: every lead of the input has state.
        let distinct = rinput.distinct_leads;
        // A fresh instance of the same group: restore all partitions, then ready.
        match start_service(cfg) {
            Ok(svc) => {
                let base = Counters::read(&svc.metrics());
                let mut ready = None;
                while svc.started.elapsed() < Duration::from_secs(300) && svc.alive() {
                    if svc.get("/readyz").is_some_and(|(c, _)| c == 200) {
                        ready = Some(svc.started.elapsed().as_secs_f64());
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                let c = Counters::read(&svc.metrics()).minus(base);
                let stopped = svc.stop();
                match ready {
                    Some(t) => r.line(format!(
                        "fresh service instance (partitions restored in parallel): ready after {t:.2} s = {:.0} leads/s by wall time including start-up (target >= 200k); leadscore_restore_seconds sum over partitions {:.2} s ({:.0} leads/s per restoring thread; {} distinct leads; leadscore_restored_leads_total says {}: it counts changelog records)",
                        distinct as f64 / t,
                        c.restore_secs,
                        distinct as f64 / c.restore_secs,
                        distinct,
                        c.restored_leads
                    )),
                    None => r.line(format!(
                        "fresh service instance: not ready ({})",
                        stopped.err().unwrap_or_default()
                    )),
                }
            }
            Err(e) => r.line(format!("fresh service instance: FAILED: {e}")),
        }
    }
}
