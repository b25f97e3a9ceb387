#!/usr/bin/env bash
# End-to-end: `leadscore score` on a generated JSON-lines file against a bare
# read-and-decode of the same file with serde_json (benches/baseline), then
# the state size per lead (benches/fold.rs in BENCH_STATE_ONLY mode).
#
#   bash benches/score.sh
#
# Settings (environment): EVENTS (default 2000000), LEADS (1000000), SEED (7),
# RUNS (3; the best run counts), DATA_DIR (target/bench-data: the generated
# file is kept there and reused), SKIP_STATE=1 to skip the state size.
set -euo pipefail

cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-2000000}
LEADS=${LEADS:-1000000}
SEED=${SEED:-7}
RUNS=${RUNS:-3}
DATA_DIR=${DATA_DIR:-target/bench-data}

log() { printf '%s\n' "$*" >&2; }

log "== building (release)"
cargo build --release --locked --bin leadscore
cargo build --release --locked --manifest-path benches/baseline/Cargo.toml --target-dir target/baseline
LEADSCORE=target/release/leadscore
BASELINE=target/baseline/release/json-baseline

mkdir -p "$DATA_DIR"
FILE="$DATA_DIR/events-s$SEED-e$EVENTS-l$LEADS.jsonl"
if [[ ! -s $FILE ]]; then
  log "== generating $FILE"
  "$LEADSCORE" generate --events "$EVENTS" --leads "$LEADS" --seed "$SEED" --format json --out "$FILE.tmp"
  mv "$FILE.tmp" "$FILE"
fi
LINES=$(wc -l <"$FILE")
SIZE=$(stat -c %s "$FILE")
cat "$FILE" >/dev/null # into the page cache
log "== input: $FILE: $LINES events, $((SIZE / 1048576)) MiB, $((SIZE / LINES)) bytes/event"

# best_of NAME CMD...: runs CMD (stdout to /dev/null) RUNS times; prints the
# best wall time in seconds on stdout, each run's time and max RSS on stderr.
best_of() {
  local name=$1 best="" t0 t1 secs rss
  shift
  local tfile
  tfile=$(mktemp)
  for ((i = 1; i <= RUNS; i++)); do
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M' -o "$tfile" "$@" >/dev/null 2>"$tfile.err" || {
      cat "$tfile.err" >&2
      return 1
    }
    t1=$EPOCHREALTIME
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rss=$(tail -n 1 "$tfile")
    log "   $name run $i: ${secs} s, max RSS $((rss / 1024)) MiB  [$(grep -v '^Command' "$tfile.err" | tail -n 1)]"
    if [[ -z $best ]] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$secs; fi
  done
  rm -f "$tfile" "$tfile.err"
  echo "$best"
}

log "== timing ($RUNS runs each, best counts)"
T_BASE=$(best_of "serde_json baseline " "$BASELINE" "$FILE")
T_SCORE=$(best_of "leadscore score     " "$LEADSCORE" score --input "$FILE")

awk -v n="$LINES" -v b="$T_BASE" -v s="$T_SCORE" 'BEGIN {
  printf "baseline (read + serde_json::Value): %.3f s  %.2f M events/s\n", b, n / b / 1e6
  printf "leadscore score > /dev/null:         %.3f s  %.2f M events/s\n", s, n / s / 1e6
  printf "score / baseline throughput:         %.2fx (>= 1 means score is no slower)\n", b / s
}'

if [[ ${SKIP_STATE:-0} != 1 ]]; then
  log "== state size (benches/fold.rs, BENCH_STATE_ONLY=1, same seed and sizes)"
  BENCH_STATE_ONLY=1 BENCH_SEED=$SEED BENCH_EVENTS=$EVENTS BENCH_LEADS=$LEADS \
    cargo bench --locked --bench fold | grep '^state:'
fi
