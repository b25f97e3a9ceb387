#!/usr/bin/env bash
# End-to-end proof that kafka.sh works: install, start, topics, produce/consume,
# transactions (commit + abort), internal topics at RF 1, compaction,
# SIGKILL + restart on the same ports with data intact, graceful stop.
# Usage: selftest.sh [DATADIR]   (default: a fresh mktemp dir, removed on success)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K="$HERE/kafka.sh"
D=${1:-$(mktemp -d /tmp/leadscore-kafka-selftest.XXXXXX)}
step() { echo "== $*" >&2; }
fail() { echo "SELFTEST FAILED: $*" >&2; exit 1; }
cleanup() { "$K" stop --dir "$D" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "install"; "$K" install >/dev/null
step "start";   BS=$("$K" start --fresh --dir "$D" | tail -n1)
[[ "$BS" =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "bad bootstrap '$BS'"
read -r PORT CPORT < "$D/ports"

step "topics"
"$K" topic create leads --dir "$D" --partitions 3 >/dev/null 2>&1
"$K" topic create txn --dir "$D" >/dev/null 2>&1
"$K" topic create state --dir "$D" --compact \
  --config segment.ms=100 --config min.cleanable.dirty.ratio=0.01 \
  --config delete.retention.ms=100 >/dev/null 2>&1

step "produce + consume"
seq 1 100 | sed 's/^/k&:v/' | "$K" run org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BS" \
  --topic leads --reader-property parse.key=true --reader-property key.separator=: 2>/dev/null
n=$("$K" run org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BS" --topic leads \
      --from-beginning --max-messages 100 --group selftest 2>/dev/null | wc -l)
[[ "$n" == 100 ]] || fail "consumed $n/100"

step "transactions"
out=$("$K" run "$HERE/TxnCheck.java" "$BS" txn 2>&1 | tail -n 3) || fail "TxnCheck: $out"
echo "$out" | grep -q "TXN CHECK OK" || fail "TxnCheck: $out"
echo "   $out" | head -n1 >&2

step "internal topics at RF 1"
desc=$("$K" topic describe --dir "$D" 2>/dev/null)
for t in __consumer_offsets __transaction_state; do
  echo "$desc" | grep -E "^Topic: $t\b.*ReplicationFactor: 1" >/dev/null || fail "$t missing or RF != 1"
done

step "compaction"
for round in 1 2 3 4; do
  for i in $(seq 1 50); do echo "key$((i % 5)):r$round-$i"; done
done | "$K" run org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BS" --topic state \
  --reader-property parse.key=true --reader-property key.separator=: 2>/dev/null
# roll the active segment so the cleaner can see the data, then wait
sleep 1; echo "key0:last" | "$K" run org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BS" \
  --topic state --reader-property parse.key=true --reader-property key.separator=: 2>/dev/null
left=999
for _ in $(seq 1 30); do
  left=$("$K" run org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BS" --topic state \
           --from-beginning --timeout-ms 3000 2>/dev/null | wc -l)
  (( left < 201 )) && break
  sleep 1
done
(( left < 201 )) || fail "no compaction: $left records left of 201"
echo "   201 records -> $left after compaction" >&2

step "kill -9 + restart on the same ports"
"$K" kill --dir "$D"
BS2=$("$K" restart --dir "$D" | tail -n1)
[[ "$BS2" == "$BS" ]] || fail "bootstrap changed: $BS -> $BS2"
read -r P2 C2 < "$D/ports"; [[ "$P2 $C2" == "$PORT $CPORT" ]] || fail "ports changed"
n=$("$K" run org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BS" --topic leads \
      --from-beginning --max-messages 100 2>/dev/null | wc -l)
[[ "$n" == 100 ]] || fail "after restart consumed $n/100"
lag=$("$K" run org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$BS" \
        --describe --group selftest 2>/dev/null | awk '$1=="selftest"{s+=$6} END{print s+0}')
[[ "$lag" == 0 ]] || fail "committed group offsets lost (lag $lag)"
out=$("$K" run "$HERE/TxnCheck.java" "$BS" txn 2>&1 | tail -n 3) || true
echo "$out" | grep -q "read_committed=10 read_uncommitted=20" \
  || fail "txn topic after restart: $out"

step "graceful stop"
"$K" stop --dir "$D"
"$K" status --dir "$D" >/dev/null && fail "still running"
trap - EXIT
[[ $# -eq 0 ]] && rm -rf "$D"
echo "SELFTEST OK ($BS)"
