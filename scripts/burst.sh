#!/usr/bin/env bash
# Gossip under a load burst (issue 14, item 4), on real processes: two nodes, each with
# 10,000 jobs of its own (`@every 20s` running `true`, so all of a node's jobs fall due
# in the same second), seeding each other. Over DURATION seconds (default 65: three
# bursts) it counts, after the two nodes first saw each other:
#   - false suspicions: "membership changed" lines where a node lost its peer;
#   - ownership changes reported by each node's run counters at exit, minus those of the
#     join (one per job that moved when the peer arrived);
#   - the runs each node made, to show the bursts happened.
# Usage: scripts/burst.sh [DURATION_SECONDS]   (run by hand; about 2.5 min)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-65}
[ -z "${BIN:-}" ] && cargo build --release --quiet
bin=${BIN:-./target/release/starling}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "logs kept in $dir" || rm -rf "$dir"' EXIT

# pair LABEL SCHEDULE: runs the two nodes with every job on SCHEDULE, prints the counts.
pair() {
  local label=$1 schedule=$2
  for n in a b; do
    for i in $(seq -w 0 9999); do
      printf '[[jobs]]\nname = "%s-%s"\nschedule = "%s"\ncommand = "true"\n\n' "$n" "$i" "$schedule"
    done >"$dir/$n.toml"
  done
  local pa=$((20000 + RANDOM % 20000)); local pb=$((pa + 1))
  $bin run --node-id a --listen 127.0.0.1:$pa --seed 127.0.0.1:$pb --jobs "$dir/a.toml" 2>"$dir/a.log" &
  local a=$!
  $bin run --node-id b --listen 127.0.0.1:$pb --seed 127.0.0.1:$pa --jobs "$dir/b.toml" 2>"$dir/b.log" &
  local b=$!
  sleep "$duration"
  kill -TERM $a $b
  wait $a $b || true
  for n in a b; do
    local log="$dir/$n.log" both lost counters fired changes
    both=$(grep -c 'membership changed.*members=\["a", "b"\]' "$log" || true)
    lost=$(grep -c 'membership changed.*members=\["[ab]"\]' "$log" || true)
    counters=$(grep 'run counters of this node' "$log" | tail -1)
    fired=$(sed -n 's/.* fired=\([0-9]*\).*/\1/p' <<<"$counters")
    changes=$(sed -n 's/.* ownership_changes=\([0-9]*\).*/\1/p' <<<"$counters")
    echo "$label, node $n: runs ${fired:-?}; saw the pair ${both} time(s); lost its peer ${lost} time(s); ownership changes ${changes:-?}"
  done
}

# The baseline first: the same 20,000 jobs, never due while measured.
[ -z "${NO_BASELINE:-}" ] && pair "baseline (0 0 1 1 *)" "0 0 1 1 *"
pair "burst (@every 20s)" "@every 20s"
