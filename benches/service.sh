#!/usr/bin/env bash
# End-to-end benchmark of the Kafka service on a real Apache Kafka broker
# (deploy/local-kafka/kafka.sh, started and stopped by the bench itself):
# throughput in exactly_once and at_least_once against a pass-through
# consumer -> producer, restore speed from the changelog, and event-to-emit
# latency at a steady rate, `leadscore replay` against `leadscore score`
# on the same events, the consume loop alone, polled or on tokio, and the
# re-keyed path (the stream as Segment messages without keys, through the
# repartition topic, exactly-once).
# About 15 minutes on 2 cores; needs Java 17+
# and Maven (the broker's jars are installed into ~/.cache/leadscore once).
#
#   bash benches/service.sh
#
# Settings (environment):
#   EVENTS (1000000), LEADS (200000)       the throughput stream (late_rate 0)
#   PARTITIONS (8), SEED (7)
#   RESTORE_EVENTS (1300000), RESTORE_LEADS (3500000)
#                                          the restore stream: about 1.05M distinct leads
#   RATE (5000), LATENCY_SECS (30), LATENCY_LEADS (20000)
#   TXN_PASSTHROUGH (1)                    0 skips the transactional pass-through
#   RUN_LIMIT (300)                        seconds; a service run stops there and
#                                          reports the rate so far
#   PHASES (1234567)                       1 service throughput, 2 pass-through,
#                                          3 restore, 4 latency, 5 replay vs score,
#                                          6 consume only: BaseConsumer::poll vs
#                                          StreamConsumer on tokio (about 1 minute),
#                                          7 re-keyed Segment, exactly_once (about 2 minutes)
#   OUT (target/bench-service)             logs: service.log (the service's
#                                          warnings, librdkafka's), broker.log, bench.out
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-service}
mkdir -p "$OUT"

export BENCH_SERVICE=1
export BENCH_SVC_EVENTS=${EVENTS:-1000000}
export BENCH_SVC_LEADS=${LEADS:-200000}
export BENCH_SVC_PARTITIONS=${PARTITIONS:-8}
export BENCH_SVC_SEED=${SEED:-7}
export BENCH_SVC_RESTORE_EVENTS=${RESTORE_EVENTS:-1300000}
export BENCH_SVC_RESTORE_LEADS=${RESTORE_LEADS:-3500000}
export BENCH_SVC_RATE=${RATE:-5000}
export BENCH_SVC_LATENCY_SECS=${LATENCY_SECS:-30}
export BENCH_SVC_LATENCY_LEADS=${LATENCY_LEADS:-20000}
export BENCH_SVC_TXN_PASSTHROUGH=${TXN_PASSTHROUGH:-1}
export BENCH_SVC_PHASES=${PHASES:-1234567}
export BENCH_SVC_RUN_LIMIT=${RUN_LIMIT:-300}
BENCH_SVC_OUT=$(realpath "$OUT")
export BENCH_SVC_OUT

log() { printf '%s\n' "$*" >&2; }

log "== building (release, bench profile)"
cargo bench --locked --bench service --no-run

busy() {
  pgrep -fa 'cargo (bench|test)' | grep -v -- '--bench service' || true
  pgrep -fa 'target/.*/deps/' | grep -v '/deps/service-' || true
}
if [[ -n $(busy) ]]; then
  log "== WARNING: the machine is busy; figures will be low:"
  busy | cut -c1-160 >&2
fi

log "== running ($(nproc) cores; the service's log goes to $OUT/service.log)"
LOG="$BENCH_SVC_OUT/service.log"
# stdout: progress and the summary; stderr: cargo's lines, then the
# service's and librdkafka's warnings.
cargo bench --locked --bench service 2>"$LOG" | tee "$BENCH_SVC_OUT/bench.out"

if [[ -n $(busy) ]]; then
  log "== WARNING: other builds/tests/benches were running at the end of the run:"
  busy | cut -c1-160 >&2
fi
sed -i -E 's/\x1b\[[0-9;]*m//g' "$LOG" # no colours in the file
log "== service log ($LOG): $(grep -c ' WARN ' "$LOG" || true) warnings, $(grep -c ' ERROR ' "$LOG" || true) errors"
# The distinct messages, most frequent first (timestamps cut).
grep -E ' (WARN|ERROR) ' "$LOG" | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -n 15 >&2 || true
