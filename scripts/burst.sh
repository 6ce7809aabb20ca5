#!/usr/bin/env bash
# Gossip under a load burst (issue 14, item 4), on real processes: two nodes, each with
# 10,000 jobs of its own (`@every 20s` running `true`, so all 20,000 jobs fall due in the
# same second, every 20 s), seeding each other. It runs the pair twice, each for DURATION
# seconds (default 65: three bursts): first with the same jobs never due (the baseline:
# a join and nothing else), then with the bursts. For each node it prints:
#   - lost peer: "membership changed" lines where the node lost its peer after the pair
#     formed (a false suspicion: nothing else fails here);
#   - stalls: times the node suspected itself (`node::health`: its gossip or its loop fell
#     behind), so fired nothing until it heard its peer again;
#   - ownership changes at exit (the join's are in the baseline; the burst should add none);
#   - runs, and the burst's duration: from a slot to the last of its runs to succeed
#     (`true` takes a few ms), the longest over the bursts.
# Usage: [BIN=path/to/starling] [RUNS=n] [KEEP=1] scripts/burst.sh [DURATION_SECONDS]
# Run by hand (about 2.5 min a run). KEEP=1 keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-65}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin starling
  BIN=./target/release/starling
fi
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "logs kept in $dir" || rm -rf "$dir"' EXIT

# jobs SCHEDULE: writes a.toml and b.toml, 10,000 jobs each, all on SCHEDULE.
jobs() {
  for n in a b; do
    for i in $(seq -w 0 9999); do
      printf '[[jobs]]\nname = "%s-%s"\nschedule = "%s"\ncommand = "true"\n\n' "$n" "$i" "$1"
    done >"$dir/$n.toml"
  done
}

# pair LABEL: runs the two nodes for DURATION seconds, prints the counts.
pair() {
  local label=$1
  local pa=$((20000 + RANDOM % 20000))
  local pb=$((pa + 1))
  "$BIN" run --node-id a --listen 127.0.0.1:$pa --seed 127.0.0.1:$pb --jobs "$dir/a.toml" 2>"$dir/$label-a.log" &
  local a=$!
  "$BIN" run --node-id b --listen 127.0.0.1:$pb --seed 127.0.0.1:$pa --jobs "$dir/b.toml" 2>"$dir/$label-b.log" &
  local b=$!
  sleep "$duration"
  kill -TERM $a $b
  wait $a $b || true
  for n in a b; do
    local log="$dir/$label-$n.log" lost stalls counters fired changes longest
    # Lines after the pair first formed in which the node saw itself alone.
    lost=$(awk '/membership changed.*members=\["a", "b"\]/{p=1} p && /membership changed.*members=\["[ab]"\]/{c++} END{print c+0}' "$log")
    stalls=$(grep -c 'this node stalled' "$log" || true)
    counters=$(grep 'run counters of this node' "$log" | tail -1)
    fired=$(sed -n 's/.* fired=\([0-9]*\).*/\1/p' <<<"$counters")
    changes=$(sed -n 's/.* ownership_changes=\([0-9]*\).*/\1/p' <<<"$counters")
    # For each slot: the last success's log time less the slot, in ms; the longest.
    longest=$(sed -n 's/^\([0-9T:.-]*\)Z .*run succeeded.* slot=\([0-9T:.-]*\)Z.*/\1 \2/p' "$log" |
      awk '{ split($1, t, "T"); split(t[2], h, ":"); at = h[1]*3600000 + h[2]*60000 + h[3]*1000;
             split($2, s, "T"); split(s[2], g, ":"); sl = g[1]*3600000 + g[2]*60000 + g[3]*1000;
             d = at - sl; if (d < 0) d += 86400000; if (d > m[$2]) m[$2] = d }
           END { for (k in m) if (m[k] > x) x = m[k]; printf "%d", x }')
    echo "$label, node $n: lost peer ${lost}; stalls ${stalls}; ownership changes ${changes:-?}; runs ${fired:-?}; longest burst ${longest} ms"
  done
}

echo "binary: $BIN; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "${RUNS:-1}"); do
  jobs "0 0 1 1 *"
  pair "baseline-$run"
  jobs "@every 20s"
  pair "burst-$run"
done
