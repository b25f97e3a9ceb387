//! The offline commands: fold a file, explain a lead, check a model, generate traffic.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::codec::{
    decode, encode_change_json, encode_event_json, encode_event_proto, Format,
    DEFAULT_MAX_EVENT_BYTES,
};
use crate::engine::{Engine, Explanation, Outcome};
use crate::event::Event;
use crate::gen::{GenConfig, Generator};
use crate::model::Model;
use crate::time::Micros;

/// What `score` saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreStats {
    pub lines: u64,
    pub events: u64,
    pub bad_lines: u64,
    pub duplicates: u64,
    pub late: u64,
    pub stale: u64,
    pub changes: u64,
}

impl fmt::Display for ScoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events, {} bad lines, {} duplicates, {} late, {} stale, {} changes",
            self.events, self.bad_lines, self.duplicates, self.late, self.stale, self.changes
        )
    }
}

fn open_input(path: &str) -> Result<Box<dyn Read>> {
    if path == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let f = File::open(path).with_context(|| format!("cannot open input file {path}"))?;
    Ok(Box::new(f))
}

/// Reads JSON lines from `input` (a path, or `-` for stdin): calls
/// `on_event` with each valid event and `on_bad` with the line number and
/// error of each invalid one. Counts lines, events and bad lines in `stats`.
pub(crate) fn read_events(
    input: &str,
    stats: &mut ScoreStats,
    mut on_event: impl FnMut(&Event<'_>) -> Result<()>,
    mut on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, open_input(input)?);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {input}"))?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        let mut body = line.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode(Format::Json, body, DEFAULT_MAX_EVENT_BYTES) {
            Ok(event) => {
                stats.events += 1;
                on_event(&event)?;
            }
            Err(e) => {
                stats.bad_lines += 1;
                on_bad(stats.lines, &e);
            }
        }
    }
    Ok(())
}

/// Reads JSON lines and folds each valid event; calls `on_bad` with the line
/// number and error of each invalid one.
fn fold_lines(
    engine: &mut Engine,
    input: &str,
    stats: &mut ScoreStats,
    mut on_changes: impl FnMut(&[crate::StatusChange]) -> Result<()>,
    on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    let mut changes = Vec::new();
    let mut folded = ScoreStats::default();
    read_events(
        input,
        stats,
        |event| {
            match engine.fold(event, &mut changes) {
                Outcome::Duplicate => folded.duplicates += 1,
                Outcome::Late => folded.late += 1,
                Outcome::Stale => folded.stale += 1,
                Outcome::Applied => {}
            }
            if !changes.is_empty() {
                folded.changes += changes.len() as u64;
                on_changes(&changes)?;
                changes.clear();
            }
            Ok(())
        },
        on_bad,
    )?;
    stats.duplicates += folded.duplicates;
    stats.late += folded.late;
    stats.stale += folded.stale;
    stats.changes += folded.changes;
    Ok(())
}

/// `leadscore score`: folds `input` (a path, or `-` for stdin) and writes the
/// changes as JSON lines.
pub fn score(
    model: Model,
    input: &str,
    until: Option<Micros>,
    out: &mut dyn Write,
) -> Result<ScoreStats> {
    let mut engine = Engine::new(Arc::new(model));
    let mut stats = ScoreStats::default();
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut buf = Vec::with_capacity(1024);
    let mut write = |changes: &[crate::StatusChange]| -> Result<()> {
        for c in changes {
            buf.clear();
            encode_change_json(c, &mut buf);
            buf.push(b'\n');
            w.write_all(&buf).context("cannot write to stdout")?;
        }
        Ok(())
    };
    fold_lines(&mut engine, input, &mut stats, &mut write, |line, e| {
        eprintln!("{input}:{line}: {e}");
    })?;
    if let Some(until) = until {
        let mut changes = Vec::new();
        engine.advance_to(until, &mut changes);
        stats.changes += changes.len() as u64;
        write(&changes)?;
    }
    w.flush().context("cannot write to stdout")?;
    // The process is about to exit: freeing millions of leads one by one
    // would only cost time.
    std::mem::forget(engine);
    Ok(stats)
}

/// `leadscore explain`: the lead's breakdown after folding `input`.
pub fn explain(model: Model, input: &str, lead: &str, at: Option<Micros>) -> Result<Explanation> {
    let mut engine = Engine::new(Arc::new(model));
    let mut stats = ScoreStats::default();
    fold_lines(
        &mut engine,
        input,
        &mut stats,
        |_| Ok(()),
        |line, e| {
            eprintln!("{input}:{line}: {e}");
        },
    )?;
    if let Some(at) = at {
        engine.advance_to(at, &mut Vec::new());
    }
    engine
        .explain(lead, at)
        .with_context(|| format!("lead {lead:?} does not appear in {input}"))
}

/// `leadscore check`: validates a service config (a file with a `[kafka]`
/// table, and the model it names) or a model file.
pub fn check(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_config = text
        .parse::<toml::Table>()
        .map(|t| t.contains_key("kafka"))
        .unwrap_or(false);
    if is_config {
        let cfg = crate::config::Config::load(path)
            .with_context(|| format!("{} is not a valid config", path.display()))?;
        let model = match &cfg.model {
            Some(m) => Model::from_path(m)
                .with_context(|| format!("the model named by {} is not valid", path.display()))?,
            None => Model::default_model(),
        };
        return Ok(format!(
            "{}: valid config: instance {:?} of group {:?}, {} input topic(s), {:?}, model {:?}",
            path.display(),
            cfg.kafka.instance_id,
            cfg.kafka.group_id,
            cfg.kafka.input_topics.len(),
            cfg.kafka.guarantee,
            model.version
        ));
    }
    let model = Model::from_path(path)
        .with_context(|| format!("{} is not a valid model", path.display()))?;
    Ok(format!(
        "{}: valid model {:?}: {} fit rules, {} engagement rules, {} criteria, half-life {}",
        path.display(),
        model.version,
        model.fit_rules.len(),
        model.engagement_rules.len(),
        model.criteria.len(),
        match model.half_life {
            Some(h) => format!(
                "{} days",
                crate::engine::format_number(h / crate::time::DAY as f64)
            ),
            None => "none".into(),
        }
    ))
}

/// `leadscore generate`: writes a generated stream; returns the event count.
pub fn generate(cfg: GenConfig, format: Format, out: &mut dyn Write) -> Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut buf = Vec::with_capacity(512);
    let mut n = 0;
    for e in Generator::new(cfg) {
        buf.clear();
        match format {
            Format::Json => {
                encode_event_json(&e, &mut buf);
                buf.push(b'\n');
            }
            Format::Protobuf => {
                let mut body = Vec::with_capacity(256);
                encode_event_proto(&e, &mut body);
                prost::encoding::encode_varint(body.len() as u64, &mut buf);
                buf.extend_from_slice(&body);
            }
        }
        w.write_all(&buf).context("cannot write events")?;
        n += 1;
    }
    w.flush().context("cannot write events")?;
    Ok(n)
}
