//! `json-baseline FILE`: reads JSON lines the way `leadscore score` does
//! (1 MiB BufReader, read_until) and decodes each into a serde_json::Value.
//! Prints the line count and the rate on stderr.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: json-baseline FILE");
    let start = Instant::now();
    let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(4096);
    let (mut events, mut fields) = (0u64, 0usize);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).expect("read") == 0 {
            break;
        }
        let mut body = line.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON line");
        // Use the value so the decode is not optimised away.
        fields += v.as_object().map_or(0, |o| o.len());
        events += 1;
    }
    let took = start.elapsed();
    eprintln!(
        "json-baseline: {events} events ({fields} top-level fields) in {took:.2?}: {:.2} M events/s",
        events as f64 / took.as_secs_f64() / 1e6
    );
}
