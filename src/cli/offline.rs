//! The offline commands: fold a file, explain a lead, check a model, generate traffic.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::{mpsc, Arc};

use anyhow::{Context, Result};

use super::detached::Detached;
use crate::codec::{
    decode, decode_json_text, decode_message, encode_change_json, Format, InputFormat, Mapping,
    TopicInput, DEFAULT_MAX_EVENT_BYTES,
};
use crate::config::InputConfig;
use crate::engine::{Engine, Explanation, Local, Outcome, VisitorLimits};
use crate::event::{Event, Message};
use crate::gen::wire::GenFormat;
use crate::gen::GenConfig;
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
    /// Dropped: their lead had been erased within the erasure window.
    pub erased: u64,
    pub changes: u64,
}

impl fmt::Display for ScoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events, {} bad lines, {} duplicates, {} late, {} stale, {} changes",
            self.events, self.bad_lines, self.duplicates, self.late, self.stale, self.changes
        )?;
        if self.erased > 0 {
            write!(f, ", {} events of erased leads dropped", self.erased)?;
        }
        Ok(())
    }
}

/// How the offline commands read their event file: its format, and the
/// config's `[input]` mappings and visitor limits.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    pub format: InputFormat,
    pub mapping: Mapping,
    pub visitor_limits: VisitorLimits,
}

impl InputOptions {
    /// `format`, with the `[input]` section of the config file `config`
    /// when given. Only that section is read (an offline command needs no
    /// broker), and it is validated as the service validates it.
    pub fn load(format: InputFormat, config: Option<&Path>) -> Result<InputOptions> {
        let input = match config {
            None => InputConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let mut root: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("{} is not valid TOML", path.display()))?;
                let mut input: InputConfig = match root.remove("input") {
                    Some(v) => v.try_into().with_context(|| {
                        format!("{}: the [input] section is not valid", path.display())
                    })?,
                    None => InputConfig::default(),
                };
                input
                    .validate()
                    .with_context(|| format!("{} is not a valid config", path.display()))?;
                input
            }
        };
        Ok(InputOptions {
            format,
            mapping: input.mapping(),
            visitor_limits: input.visitor_limits(),
        })
    }

    fn engine(&self, model: Model) -> Engine {
        let mut engine = Engine::new(Arc::new(model));
        engine.set_visitor_limits(self.visitor_limits);
        engine
    }
}

/// Reads an event file in a format other than the native JSON, one line a
/// message: calls `on_message` with each valid message, in order, and
/// `on_bad` with the line number and error of each invalid line.
pub(crate) fn read_messages(
    input: &str,
    opts: &InputOptions,
    stats: &mut ScoreStats,
    mut on_message: impl FnMut(Message<'_>) -> Result<()>,
    mut on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    // A file has no message keys to check.
    let topic = TopicInput {
        format: opts.format,
        keyed_by_lead: false,
        schema_registry_framing: false,
    };
    read_blocks(input, |block| {
        for line in block.split_inclusive(|&b| b == b'\n') {
            stats.lines += 1;
            let mut body = line;
            while let [rest @ .., b'\n' | b'\r'] = body {
                body = rest;
            }
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let decoded = decode_message(
                &topic,
                &opts.mapping,
                None,
                &[],
                body,
                DEFAULT_MAX_EVENT_BYTES,
            );
            match decoded {
                Ok(d) => {
                    stats.events += 1;
                    on_message(d.message)?;
                }
                Err(e) => {
                    stats.bad_lines += 1;
                    on_bad(stats.lines, &e);
                }
            }
        }
        Ok(())
    })
}

/// [`read_messages`], each message folded with visitors and
/// identification ([`Local`]), one thread; `on_changes` gets the changes
/// now and then.
fn fold_messages(
    engine: &mut Engine,
    input: &str,
    opts: &InputOptions,
    stats: &mut ScoreStats,
    mut on_changes: impl FnMut(&mut Vec<crate::StatusChange>) -> Result<()>,
) -> Result<()> {
    let mut local = Local::default();
    let mut changes = Vec::new();
    let mut folded = ScoreStats::default();
    read_messages(
        input,
        opts,
        stats,
        |msg| {
            let before = changes.len();
            local.ingest(engine, msg, &mut changes, |_, outcome| {
                count(&mut folded, outcome)
            });
            folded.changes += (changes.len() - before) as u64;
            if changes.len() >= WRITE_BATCH {
                on_changes(&mut changes)?;
                changes.clear();
            }
            Ok(())
        },
        |line, e| eprintln!("{input}:{line}: {e}"),
    )?;
    if !changes.is_empty() {
        on_changes(&mut changes)?;
    }
    stats.duplicates += folded.duplicates;
    stats.late += folded.late;
    stats.stale += folded.stale;
    stats.erased += folded.erased;
    stats.changes += folded.changes;
    Ok(())
}

fn count(stats: &mut ScoreStats, outcome: Outcome) {
    match outcome {
        Outcome::Duplicate => stats.duplicates += 1,
        Outcome::Late => stats.late += 1,
        Outcome::Stale => stats.stale += 1,
        Outcome::Erased => stats.erased += 1,
        Outcome::Applied | Outcome::Held => {}
    }
}

/// `leadscore score --input-format …`: [`score`] for the native JSON (its
/// fast path), else one thread that decodes each line, folds it and writes
/// the changes.
pub fn score_input(
    model: Model,
    input: &str,
    opts: &InputOptions,
    until: Option<Micros>,
    scores: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> Result<ScoreStats> {
    if opts.format == InputFormat::Json {
        // The visitor limits mean nothing to JSON events: they have no visitors.
        return score(model, input, until, scores, out);
    }
    let mut engine = opts.engine(model);
    if scores.is_some() {
        engine.track_scores();
    }
    let mut stats = ScoreStats::default();
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut write = |changes: &mut Vec<crate::StatusChange>| -> Result<()> {
        buf.clear();
        for c in changes.iter() {
            encode_change_json(c, &mut buf);
            buf.push(b'\n');
        }
        w.write_all(&buf).context("cannot write to stdout")
    };
    fold_messages(&mut engine, input, opts, &mut stats, &mut write)?;
    if let Some(until) = until {
        let mut changes = Vec::new();
        engine.advance_to(until, &mut changes);
        stats.changes += changes.len() as u64;
        write(&mut changes)?;
    }
    w.flush().context("cannot write to stdout")?;
    if let Some(path) = scores {
        write_scores(&mut engine, path)?;
    }
    std::mem::forget(engine);
    Ok(stats)
}

/// `--scores FILE`: every lead's score record at the end, as JSON lines —
/// what the score topic holds once the service has folded the same events.
fn write_scores(engine: &mut Engine, path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let mut buf = Vec::with_capacity(512);
    let mut result = Ok(());
    engine.drain_scores(|r| {
        if result.is_ok() {
            buf.clear();
            crate::codec::encode_score_json(&r, &mut buf);
            buf.push(b'\n');
            result = w.write_all(&buf);
        }
    });
    engine.drain_dirty(|_| {});
    result
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write to {}", path.display()))
}

fn open_input(path: &str) -> Result<Box<dyn Read>> {
    if path == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let f = File::open(path).with_context(|| format!("cannot open input file {path}"))?;
    Ok(Box::new(f))
}

/// How many events [`read_batches`] decodes before handing them on.
const BATCH: usize = 256;

/// Reads `input` (a path, or `-` for stdin) in 1 MiB reads and calls
/// `on_block` with whole lines at a time (the last line of the input may
/// lack its newline).
fn read_blocks(input: &str, mut on_block: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut reader = open_input(input)?;
    // A partial line at the end of `buf` moves to the front before the next read.
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut eof = false;
    while !eof || filled > 0 {
        if !eof {
            if filled == buf.len() {
                // A line longer than the buffer.
                buf.resize(buf.len() * 2, 0);
            }
            let n = loop {
                match reader.read(&mut buf[filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("cannot read {input}")),
                }
            };
            filled += n;
            eof = n == 0;
        }
        // Up to the last newline, or everything at the end of the input.
        let whole = if eof {
            filled
        } else {
            match buf[..filled].iter().rposition(|&c| c == b'\n') {
                Some(i) => i + 1,
                None => continue,
            }
        };
        on_block(&buf[..whole])?;
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    Ok(())
}

/// Numbers the lines of `block` on from `stats.lines`, skips blank ones and
/// decodes the others: calls `on_event` with each valid event, the range of
/// its line in `block` and the line's text (empty for a line that is not
/// UTF-8), and `on_bad` with the number and error of each invalid line.
/// Counts lines, events and bad lines in `stats`.
fn decode_lines<'a>(
    block: &'a [u8],
    stats: &mut ScoreStats,
    on_event: impl FnMut(Event<'a>, Range<usize>, &'a str) -> Result<()>,
    on_bad: &mut impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    match std::str::from_utf8(block) {
        Ok(text) => decode_text_lines(text, stats, on_event, on_bad),
        Err(_) => decode_byte_lines(block, stats, on_event, on_bad),
    }
}

/// [`decode_lines`] of a block that is UTF-8 throughout (the usual case):
/// one check for the block, none per line or string, and the lines found
/// with a fast byte search.
fn decode_text_lines<'a>(
    block: &'a str,
    stats: &mut ScoreStats,
    mut on_event: impl FnMut(Event<'a>, Range<usize>, &'a str) -> Result<()>,
    on_bad: &mut impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    let mut at = 0;
    for line in block.split_inclusive('\n') {
        let start = at;
        at += line.len();
        stats.lines += 1;
        let body = line.trim_end_matches(['\n', '\r']);
        if body.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match decode_json_text(body, DEFAULT_MAX_EVENT_BYTES) {
            Ok(event) => {
                stats.events += 1;
                on_event(event, start..start + body.len(), body)?;
            }
            Err(e) => {
                stats.bad_lines += 1;
                on_bad(stats.lines, &e);
            }
        }
    }
    Ok(())
}

/// [`decode_lines`] of a block with bytes that are not UTF-8 somewhere:
/// line by line, each checked on its own.
fn decode_byte_lines<'a>(
    block: &'a [u8],
    stats: &mut ScoreStats,
    mut on_event: impl FnMut(Event<'a>, Range<usize>, &'a str) -> Result<()>,
    on_bad: &mut impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    let mut at = 0;
    for line in block.split_inclusive(|&b| b == b'\n') {
        let start = at;
        at += line.len();
        stats.lines += 1;
        let mut body = line;
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode(Format::Json, body, DEFAULT_MAX_EVENT_BYTES) {
            Ok(event) => {
                stats.events += 1;
                let text = std::str::from_utf8(body).unwrap_or("");
                on_event(event, start..start + body.len(), text)?;
            }
            Err(e) => {
                stats.bad_lines += 1;
                on_bad(stats.lines, &e);
            }
        }
    }
    Ok(())
}

/// Reads JSON lines from `input` (a path, or `-` for stdin): calls
/// `on_batch` with the valid events, in order, up to [`BATCH`] at a time,
/// and `on_bad` with the line number and error of each invalid line. Counts
/// lines, events and bad lines in `stats`.
pub(crate) fn read_batches(
    input: &str,
    stats: &mut ScoreStats,
    mut on_batch: impl FnMut(&[Event<'_>]) -> Result<()>,
    mut on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    read_blocks(input, |block| {
        // Decoded in place, borrowing from the block.
        let mut events = Vec::with_capacity(BATCH);
        decode_lines(
            block,
            stats,
            |event, _, _| {
                events.push(event);
                if events.len() == BATCH {
                    on_batch(&events)?;
                    events.clear();
                }
                Ok(())
            },
            &mut on_bad,
        )?;
        if events.is_empty() {
            Ok(())
        } else {
            on_batch(&events)
        }
    })
}

/// [`read_batches`], one event at a time.
pub(crate) fn read_events(
    input: &str,
    stats: &mut ScoreStats,
    mut on_event: impl FnMut(&Event<'_>) -> Result<()>,
    on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    read_batches(
        input,
        stats,
        |events| events.iter().try_for_each(&mut on_event),
        on_bad,
    )
}

/// Reads JSON lines and folds each valid event; calls `on_changes` with the
/// changes of each batch, and `on_bad` with the line number and error of
/// each invalid line.
fn fold_lines(
    engine: &mut Engine,
    input: &str,
    stats: &mut ScoreStats,
    mut on_changes: impl FnMut(&mut Vec<crate::StatusChange>) -> Result<()>,
    on_bad: impl FnMut(u64, &dyn fmt::Display),
) -> Result<()> {
    let mut changes = Vec::new();
    let mut folded = ScoreStats::default();
    read_batches(
        input,
        stats,
        |events| {
            fold_counted(engine, events, &mut changes, &mut folded);
            if !changes.is_empty() {
                on_changes(&mut changes)?;
                changes.clear();
            }
            Ok(())
        },
        on_bad,
    )?;
    stats.duplicates += folded.duplicates;
    stats.late += folded.late;
    stats.stale += folded.stale;
    stats.erased += folded.erased;
    stats.changes += folded.changes;
    Ok(())
}

/// Folds `events`, counting outcomes and changes in `stats`.
fn fold_counted(
    engine: &mut Engine,
    events: &[Event<'_>],
    changes: &mut Vec<crate::StatusChange>,
    stats: &mut ScoreStats,
) {
    let before = changes.len();
    engine.fold_batch(events, changes, |outcome| match outcome {
        Outcome::Duplicate => stats.duplicates += 1,
        Outcome::Late => stats.late += 1,
        Outcome::Stale => stats.stale += 1,
        Outcome::Erased => stats.erased += 1,
        Outcome::Applied | Outcome::Held => {}
    });
    stats.changes += (changes.len() - before) as u64;
}

/// A block of input lines and the events decoded from it, on their way from
/// `score`'s decoding thread to its folding one.
#[derive(Default)]
struct Block {
    text: BlockText,
    events: Vec<Detached>,
}

/// A block's lines: checked as UTF-8 once, on the decoding thread, so the
/// folding thread reads them as text without checking again.
enum BlockText {
    Utf8(String),
    /// Some line is not UTF-8: each line is checked where it is read.
    Bytes(Vec<u8>),
}

impl Default for BlockText {
    fn default() -> BlockText {
        BlockText::Utf8(String::new())
    }
}

impl Block {
    /// Replaces the text with `bytes`, reusing the buffer.
    fn fill(&mut self, bytes: &[u8]) {
        let mut buf = match std::mem::take(&mut self.text) {
            BlockText::Utf8(s) => s.into_bytes(),
            BlockText::Bytes(b) => b,
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        self.text = match String::from_utf8(buf) {
            Ok(s) => BlockText::Utf8(s),
            Err(e) => BlockText::Bytes(e.into_bytes()),
        };
        self.events.clear();
    }

    /// The text of a line an event was decoded from ("" if not UTF-8).
    fn line(&self, range: Range<usize>) -> &str {
        match &self.text {
            BlockText::Utf8(s) => &s[range],
            BlockText::Bytes(b) => std::str::from_utf8(&b[range]).unwrap_or(""),
        }
    }
}

/// How many changes `score` hands its writer thread at a time.
const WRITE_BATCH: usize = 4096;

/// `leadscore score`: folds `input` (a path, or `-` for stdin) and writes the
/// changes as JSON lines.
///
/// Three threads: one reads and decodes, this one folds, one encodes and
/// writes the changes. The fold is exactly the one-thread fold of the same
/// lines in file order; only the work around it moves.
pub fn score(
    model: Model,
    input: &str,
    until: Option<Micros>,
    scores: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> Result<ScoreStats> {
    let mut engine = Engine::new(Arc::new(model));
    if scores.is_some() {
        engine.track_scores();
    }
    let mut stats = ScoreStats::default();
    // Decoded blocks go to this thread, and come back empty to be reused.
    let (block_tx, block_rx) = mpsc::sync_channel::<Block>(2);
    let (spare_tx, spare) = mpsc::channel::<Block>();
    // Changes go to the writer in batches and come back to be dropped here:
    // memory freed by the thread that allocated it stays cheap to reuse.
    let (tx, rx) = mpsc::sync_channel::<Vec<crate::StatusChange>>(4);
    let (back_tx, back) = mpsc::channel::<Vec<crate::StatusChange>>();
    // Not a scoped thread: when the output fails, the fold returns at once,
    // and a decoder blocked on a slow input (a pipe) is not waited for.
    let name = input.to_string();
    let decoder = std::thread::spawn(move || -> Result<ScoreStats> {
        let mut read = ScoreStats::default();
        read_blocks(&name, |bytes| {
            let mut block = spare.try_recv().unwrap_or_default();
            block.fill(bytes);
            let Block { text, events } = &mut block;
            let detach = |event, range, line: &str| {
                events.push(Detached::new(event, line, range));
                Ok(())
            };
            let on_bad = &mut |line, e: &dyn fmt::Display| eprintln!("{name}:{line}: {e}");
            match text {
                BlockText::Utf8(s) => decode_text_lines(s, &mut read, detach, on_bad)?,
                BlockText::Bytes(b) => decode_byte_lines(b, &mut read, detach, on_bad)?,
            }
            // A closed channel: the fold stopped, and says why.
            block_tx
                .send(block)
                .map_err(|_| anyhow::anyhow!("the fold stopped"))
        })?;
        Ok(read)
    });
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            let mut w = BufWriter::with_capacity(1 << 16, out);
            let mut buf = Vec::with_capacity(1 << 16);
            for changes in rx {
                buf.clear();
                for c in &changes {
                    encode_change_json(c, &mut buf);
                    buf.push(b'\n');
                }
                w.write_all(&buf).context("cannot write to stdout")?;
                // The fold may have finished; then the changes drop here.
                let _ = back_tx.send(changes);
            }
            w.flush().context("cannot write to stdout")
        });
        let mut pending: Vec<crate::StatusChange> = Vec::with_capacity(WRITE_BATCH);
        // A closed channel means the writer failed: its error is the one to report.
        let mut send = |changes: &mut Vec<crate::StatusChange>, flush: bool| -> Result<()> {
            pending.append(changes);
            if pending.len() < WRITE_BATCH && !flush {
                return Ok(());
            }
            let mut next = back.try_recv().unwrap_or_default();
            next.clear();
            let full = std::mem::replace(&mut pending, next);
            tx.send(full)
                .map_err(|_| anyhow::anyhow!("the writer stopped"))
        };
        // Takes the receiver, so that it is dropped (and a blocked decoder
        // freed) as soon as the fold stops.
        let fold = |blocks: mpsc::Receiver<Block>| -> Result<ScoreStats> {
            let mut changes = Vec::new();
            for block in blocks {
                let events: Vec<Event<'_>> = block
                    .events
                    .iter()
                    .map(|e| e.attach(block.line(e.line())))
                    .collect();
                fold_counted(&mut engine, &events, &mut changes, &mut stats);
                drop(events);
                // The decoder may have finished; then the block drops here.
                let _ = spare_tx.send(block);
                send(&mut changes, false)?;
            }
            // The blocks ended: the decoder has returned. After a read
            // error the input did not end, so the clock is not advanced.
            let read = decoder.join().expect("the decoder thread does not panic")?;
            if let Some(until) = until {
                engine.advance_to(until, &mut changes);
                stats.changes += changes.len() as u64;
            }
            send(&mut changes, true)?;
            Ok(read)
        };
        let folded = fold(block_rx);
        drop(tx);
        let written = writer.join().expect("the writer thread does not panic");
        // The writer's error explains the fold's.
        let read = written.and(folded)?;
        stats.lines = read.lines;
        stats.events = read.events;
        stats.bad_lines = read.bad_lines;
        anyhow::Ok(())
    })?;
    if let Some(path) = scores {
        write_scores(&mut engine, path)?;
    }
    // The process is about to exit: freeing millions of leads one by one
    // would only cost time.
    std::mem::forget(engine);
    Ok(stats)
}

/// `leadscore explain`: the lead's breakdown after folding `input`.
pub fn explain(model: Model, input: &str, lead: &str, at: Option<Micros>) -> Result<Explanation> {
    explain_input(model, input, &InputOptions::default(), lead, at)
}

/// [`explain`] of an event file in the format of `opts`.
pub fn explain_input(
    model: Model,
    input: &str,
    opts: &InputOptions,
    lead: &str,
    at: Option<Micros>,
) -> Result<Explanation> {
    let mut engine = opts.engine(model);
    let mut stats = ScoreStats::default();
    if opts.format == InputFormat::Json {
        fold_lines(
            &mut engine,
            input,
            &mut stats,
            |_| Ok(()),
            |line, e| {
                eprintln!("{input}:{line}: {e}");
            },
        )?;
    } else {
        fold_messages(&mut engine, input, opts, &mut stats, |_| Ok(()))?;
    }
    if let Some(at) = at {
        engine.advance_to(at, &mut Vec::new());
    }
    if let Some(x) = engine.explain(lead, at) {
        return Ok(x);
    }
    if let Some(m) = engine.erased(lead) {
        let fmt = crate::time::format_rfc3339;
        let window = engine.model().retention.erasure_window;
        anyhow::bail!(
            "lead {lead:?} was erased at {} (lead_erased in {input}): leadscore keeps no state of it; its events up to {} are dropped, a later one starts a new lead",
            fmt(m.erased_at),
            fmt(m.erased_at.saturating_add(window))
        );
    }
    match engine.visitor(lead) {
        Some(v) => {
            let fmt = crate::time::format_rfc3339;
            let kept: Vec<String> = v
                .retained
                .iter()
                .map(|e| format!("{} at {}", e.event_type, fmt(e.occurred_at)))
                .collect();
            let link = v.linked_to.map_or_else(
                || "not identified yet".to_string(),
                |l| format!("identified as lead {l:?}: its later events go there"),
            );
            anyhow::bail!(
                "{lead:?} is an anonymous visitor in {input}, not a lead: {link}; {} retained event(s){}{}; kept until {} unless it has another event",
                kept.len(),
                if kept.is_empty() { "" } else { ": " },
                kept.join(", "),
                fmt(v.expires_at)
            )
        }
        None => anyhow::bail!("lead {lead:?} does not appear in {input}"),
    }
}

/// `leadscore check`: validates a service config (a file with a `[kafka]`
/// table, and the model it names) or a model file.
/// The groups whose half-life differs from the model's, as `" (demo: 90
/// days)"`; empty when there are none.
fn group_half_lives(model: &Model) -> String {
    let own: Vec<String> = model
        .engagement_groups
        .iter()
        .filter_map(|g| match g.half_life {
            Some(hl) if hl != model.half_life => {
                Some(format!("{}: {}", g.name, crate::engine::half_life_text(hl)))
            }
            _ => None,
        })
        .collect();
    if own.is_empty() {
        String::new()
    } else {
        format!(" ({})", own.join(", "))
    }
}

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
    let conditions = model.condition_count();
    Ok(format!(
        "{}: valid model {:?}: {} fit rules, {} engagement rules, {} criteria, half-life {}{}{}",
        path.display(),
        model.version,
        model.fit_rules.len(),
        model.engagement_rules.len(),
        model.criteria.len(),
        crate::engine::half_life_text(model.half_life),
        group_half_lives(&model),
        if conditions > 0 {
            format!(
                ", {conditions} conditions ({} windows)",
                model.windows.list.len()
            )
        } else {
            String::new()
        }
    ) + &match model.retention.inactive_after {
        Some(d) => format!(
            "; leads expire after {} days without an event{}",
            crate::engine::format_number(d as f64 / crate::time::DAY as f64),
            if model.retention.keep_customers {
                " (customers kept)"
            } else {
                ""
            }
        ),
        None => String::new(),
    })
}

/// `leadscore generate`: writes a generated stream; returns the message count.
pub fn generate(cfg: GenConfig, format: GenFormat, out: &mut dyn Write) -> Result<u64> {
    crate::gen::wire::write_stream(cfg, format, out).context("cannot write events")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines that straddle the 1 MiB reads, a line longer than the buffer,
    /// blank and bad lines, and no newline at the end: every line is seen
    /// once, in order, with its number.
    #[test]
    fn read_batches_sees_every_line_across_buffer_boundaries() {
        let mut text = String::new();
        let mut want_events = Vec::new();
        let mut want_bad = Vec::new();
        let mut line = 0u64;
        let mut push = |text: &mut String, l: &str| {
            text.push_str(l);
            text.push('\n');
            line += 1;
            line
        };
        for i in 0..30_000 {
            let n = match i {
                7_000 => push(&mut text, "{\"not\": \"an event\"}"),
                9_000 => push(&mut text, "   "),
                12_000 => push(
                    &mut text,
                    &format!("{{\"pad\": \"{}\"}}", "x".repeat(3 << 20)),
                ),
                _ => {
                    let id = format!("e{i}");
                    let n = push(
                        &mut text,
                        &format!(
                            r#"{{"event_id":"{id}","lead_id":"L{}","type":"page_view","occurred_at":"2026-03-02T10:00:00Z"}}"#,
                            i % 97
                        ),
                    );
                    want_events.push(id);
                    n
                }
            };
            if i == 7_000 || i == 12_000 {
                want_bad.push(n);
            }
        }
        text.push_str(r#"{"event_id":"last","lead_id":"L","type":"page_view","occurred_at":"2026-03-02T10:00:00Z"}"#);
        want_events.push("last".into());
        let dir = std::env::temp_dir().join(format!("leadscore-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        std::fs::write(&path, &text).unwrap();

        let mut stats = ScoreStats::default();
        let mut got_events = Vec::new();
        let mut got_bad = Vec::new();
        read_batches(
            path.to_str().unwrap(),
            &mut stats,
            |batch| {
                assert!(!batch.is_empty() && batch.len() <= BATCH);
                got_events.extend(batch.iter().map(|e| e.event_id.to_string()));
                Ok(())
            },
            |n, _| got_bad.push(n),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got_events, want_events);
        assert_eq!(got_bad, want_bad);
        assert_eq!(stats.lines, 30_001);
        assert_eq!(stats.events, want_events.len() as u64);
        assert_eq!(stats.bad_lines, 2);
    }
}
