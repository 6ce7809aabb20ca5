#!/usr/bin/env bash
# A stopped process (SIGSTOP: a VM pause, swap, a stopped container) on real processes:
# 3 peers on 127.0.0.1 with 8 jobs firing every second; the peer that owns the most jobs
# is stopped for each length given, then continued; counts the slots run twice and the
# slots never run, from 2 s before the stop to 2 s before the end, in the default mode and
# in quorum mode (--expected-size 3).
# Usage: scripts/pause.sh [SECONDS...]   (default: 2 5 15 60)
# MODES="default quorum" by default; the logs of a run with a slot run twice or never run
# are kept under $KEEP (default /tmp/starling-pause).
set -euo pipefail
cd "$(dirname "$0")/.."
lengths=("$@")
[ ${#lengths[@]} -eq 0 ] && lengths=(2 5 15 60)
cargo build --release --quiet
bin=$PWD/target/release/starling
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
for j in 0 1 2 3 4 5 6 7; do
  printf '[[jobs]]\nname = "job-%02d"\nschedule = "@every 1s"\ncommand = "echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> %s/runs.txt"\n\n' "$j" "$dir"
done >"$dir/jobs.toml"
# The peer owning the most jobs, as the nodes compute it.
victim=${VICTIM:-$("$bin" owners --jobs "$dir/jobs.toml" --members a,b,c | sed -n 's/^\([abc]\): \([0-9]*\) job(s)$/\2 \1/p' | sort -rn | awk 'NR==1{print $2}')}
port=$((17000 + RANDOM % 20000))
keep=${KEEP:-/tmp/starling-pause}
for mode in ${MODES:-default quorum}; do
  extra=()
  [ "$mode" = quorum ] && extra=(--expected-size 3)
  for s in "${lengths[@]}"; do
    rm -f "$dir"/runs.txt "$dir"/*.log
    p=($port $((port + 1)) $((port + 2)))
    port=$((port + 3))
    pids=()
    i=0
    for n in a b c; do
      seeds=()
      for k in 0 1 2; do [ $k -ne $i ] && seeds+=(--seed "127.0.0.1:${p[$k]}"); done
      "$bin" run --node-id $n --listen "127.0.0.1:${p[$i]}" "${seeds[@]}" --jobs "$dir/jobs.toml" ${extra[@]+"${extra[@]}"} 2>"$dir/$n.log" &
      pids+=($!)
      i=$((i + 1))
    done
    case $victim in a) v=${pids[0]} ;; b) v=${pids[1]} ;; *) v=${pids[2]} ;; esac
    sleep 6
    start=$(date +%s%3N)
    kill -STOP "$v"
    sleep "$s"
    kill -CONT "$v"
    sleep 10
    end=$(date +%s%3N)
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    if python3 - "$dir/runs.txt" "$start" "$end" "$mode" "$s" "$victim" <<'PY'
import collections, sys
path, start, end, mode, secs, victim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
runs = collections.defaultdict(list)
for line in open(path):
    node, job, slot = line.split()
    runs[(job, int(slot))].append(node)
lo, hi = (start // 1000 - 2) * 1000, (end // 1000 - 2) * 1000
slots = [(f"job-{j:02d}", s) for j in range(8) for s in range(lo, hi + 1, 1000)]
dup = sum(1 for k in slots if len(runs.get(k, [])) > 1)
miss = sum(1 for k in slots if not runs.get(k))
print(f"{mode:7} SIGSTOP {secs:>3}s of {victim}: {len(slots)} slots, {dup} run twice, {miss} never run")
for k in slots:
    if len(runs.get(k, [])) != 1:
        print(f"    {k[0]} {k[1]}: {runs.get(k, [])}")
sys.exit(1 if dup or miss else 0)
PY
    then :; else
      mkdir -p "$keep"; cp -r "$dir" "$keep/$mode-$s-$(date +%s)"; echo "    logs kept in $keep"
    fi
    { grep -h "resumed after a stall" "$dir/$victim.log" || true; } | grep -o 'cause=.*after_ms=[0-9]*' | sed 's/^/    resumed: /'
  done
done
