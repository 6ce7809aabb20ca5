#!/usr/bin/env bash
# Measures failover on real processes with the default config: runs `starling demo`
# (3 peers, one killed with SIGKILL) N times and reports the time from the crash to the
# first slot run by a new owner, per run and the median over runs.
# Usage: scripts/failover.sh [N]   (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-7}
cargo build --release --quiet
times=()
for i in $(seq 1 "$n"); do
  out=$(./target/release/starling demo --duration 16s 2>/dev/null)
  t=$(sed -n 's/.*first slot \([0-9.]*\)s after the crash.*/\1/p' <<<"$out")
  dup=$(sed -n 's/.*: \([0-9]*\) duplicate(s), \([0-9]*\) missing/\1 \2/p' <<<"$out")
  echo "run $i: failover ${t}s; duplicates, missing: ${dup}"
  times+=("$t")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median failover over %d runs: %.2fs (min %.2fs, max %.2fs)\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
