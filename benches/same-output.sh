#!/usr/bin/env bash
# Checks that a change left the scoring output byte-identical: builds a base
# revision (default: the previous commit on main, HEAD~1; or BASE=<rev>) and
# the work tree, and compares `leadscore score` of both on the golden streams
# and on a generated stream (EVENTS, default 1000000, over LEADS, 200000).
# The service and replay are held to `score` by the broker tests
# (tests/service.rs, tests/crash.rs, tests/replay.rs), so equal `score`
# output means equal `run` and `replay` output too.
#
#   bash benches/same-output.sh            # against HEAD~1
#   BASE=b448994 bash benches/same-output.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-HEAD~1}
EVENTS=${EVENTS:-1000000}
LEADS=${LEADS:-200000}
OUT=${OUT:-target/same-output}
mkdir -p "$OUT"
log() { printf '%s\n' "$*" >&2; }

rev=$(git rev-parse --short "$BASE")
tree="$OUT/base-$rev"
if [[ ! -d $tree ]]; then
  git worktree add --detach "$tree" "$rev" >/dev/null
fi
log "== building base $rev and the work tree (release)"
cargo build --release --locked --bin leadscore
(cd "$tree" && cargo build --release --locked --bin leadscore)
NEW=target/release/leadscore
OLD="$tree/target/release/leadscore"

gen="$OUT/events-$EVENTS-$LEADS.jsonl"
[[ -s $gen ]] || "$NEW" generate --events "$EVENTS" --leads "$LEADS" --seed 7 --out "$gen"
# The base's generator must write the same stream, or the comparison is moot.
"$OLD" generate --events 20000 --leads 2000 --seed 7 --out "$OUT/gen-old.jsonl"
"$NEW" generate --events 20000 --leads 2000 --seed 7 --out "$OUT/gen-new.jsonl"
cmp "$OUT/gen-old.jsonl" "$OUT/gen-new.jsonl"

fail=0
for input in tests/golden/scenario.jsonl deploy/examples/events.jsonl "$gen"; do
  for until in "" 2027-01-01T00:00:00Z; do
    args=(score --input "$input")
    [[ -n $until ]] && args+=(--until "$until")
    "$OLD" "${args[@]}" >"$OUT/old.out" 2>/dev/null
    "$NEW" "${args[@]}" >"$OUT/new.out" 2>/dev/null
    if cmp -s "$OUT/old.out" "$OUT/new.out"; then
      log "same: $input ${until:+--until $until} ($(wc -l <"$OUT/new.out") changes)"
    else
      log "DIFFERENT: $input ${until:+--until $until}"
      fail=1
    fi
  done
done
exit $fail
