#!/usr/bin/env bash
# Failure-detector tuning table from the deterministic simulator: sweeps the gossip
# interval x the phi threshold over the `crash`, `flap` and `steady` scenarios and prints
# one Markdown table (see docs/tuning.md for what each column means).
#
#   crash  -> failover: per seed the worst lateness of any slot (lateness_max_ms), median
#             and worst over the seeds; and the takeover time derived from it (crash ->
#             the crashed node's first slot run elsewhere; see `takeover` below)
#   flap   -> false suspicions: duplicates per run, share of runs with any duplicate, and
#             per stall length the share of stalls that got the stalled node evicted (its
#             slots ran twice)
#   steady -> the baseline: same seed = same run up to the crash, so a crash run no later
#             than its steady run has its failover hidden under the start-up lateness
#   Every run with passed == false is listed under the table with its replay command.
#
# Usage: scripts/tune.sh [SEEDS]   (default 20; seeds 0..SEEDS)
# Env:   TUNE_DIR (default target/tune): where the per-sweep reports and logs go.
#        TUNE_INTERVALS (default "100ms 200ms 500ms 1s"), TUNE_PHIS (default "5 8 12"): the grid.
#        TUNE_REUSE=1: no build, no sweeps; print the table from the reports in TUNE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=${1:-20}
if ! [[ $seeds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/tune.sh [SEEDS]  (a positive number, default 20)" >&2
  exit 2
fi
read -ra intervals <<<"${TUNE_INTERVALS:-100ms 200ms 500ms 1s}"
read -ra phis <<<"${TUNE_PHIS:-5 8 12}"
scenarios=(crash flap steady)
dir=${TUNE_DIR:-target/tune}

if [[ ${TUNE_REUSE:-} != 1 ]]; then
  cargo build --release --quiet -p starling-sim
  mkdir -p "$dir"
  rm -f "$dir"/*.json "$dir"/*.log "$dir/build.txt" "$dir/seeds.txt" "$dir/starling-sim"
  # A private copy: a rebuild of target/ during the sweeps must not change the binary the
  # sweeps' child processes start.
  sim="$dir/starling-sim"
  cp target/release/starling-sim "$sim"
  # What was built: the commit, plus a digest of any uncommitted change to the sources.
  build=$(git rev-parse --short HEAD)
  if ! git diff --quiet HEAD -- src sim Cargo.toml Cargo.lock; then
    build="$build + uncommitted changes (diff sha1 $(git diff HEAD -- src sim Cargo.toml Cargo.lock | sha1sum | cut -c1-12))"
  fi
  echo "$build" >"$dir/build.txt"
  echo "$seeds" >"$dir/seeds.txt"
  printf '%s\n' "${intervals[*]}" "${phis[*]}" >"$dir/grid.txt"

  start=$SECONDS
  for gi in "${intervals[@]}"; do
    for phi in "${phis[@]}"; do
      for sc in "${scenarios[@]}"; do
        base="$dir/$sc-$gi-$phi"
        t0=$SECONDS
        # The simulator exits 1 when a run fails (the report still lists every seed); a sweep
        # killed by a signal (exit > 128, e.g. someone's pkill on a shared machine) is
        # retried, up to twice.
        for _ in 1 2 3; do
          rc=0
          rm -f "$base.json"
          "$sim" --seeds "0..$seeds" --scenario "$sc" --gossip-interval "$gi" --phi "$phi" \
            --report "$base.json" >"$base.log" 2>&1 || rc=$?
          ((rc > 128)) || break
          echo "gossip $gi phi $phi $sc: killed (exit $rc), retrying" >&2
        done
        echo "gossip $gi phi $phi $sc: exit $rc, $((SECONDS - t0))s" >&2
      done
    done
  done
  echo "sweeps done in $((SECONDS - start))s" >&2
fi
# What the reports in $dir are (a TUNE_REUSE run prints what the sweeps ran).
build=$(cat "$dir/build.txt")
seeds=$(cat "$dir/seeds.txt")
{ read -ra intervals; read -ra phis; } <"$dir/grid.txt"

# The simulator's start instant (slots in reports are absolute, fault times relative to it).
epoch=$(sed -n 's/.*const EPOCH: UnixMillis = UnixMillis(\([0-9_]*\)).*/\1/p' sim/src/world.rs | tr -d _)

python3 - "$dir" "$seeds" "${epoch:-1772953140000}" "$build" "${intervals[*]}" "${phis[*]}" <<'EOF'
import json, os, re, statistics, sys
from datetime import datetime

d, seeds, epoch, build = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
intervals, phis = sys.argv[5].split(), sys.argv[6].split()
# Stall lengths (ms) reported separately; the GC-like stall of ~1 s is the one that matters.
buckets = [(200, 500), (500, 1000), (1000, 2000), (2000, 3001)]
bucket_names = ["<0.5 s", "0.5-1 s", "1-2 s", "2-3 s"]
stall_re = re.compile(r"^(\d+)ms Stall \{ node: (\d+), ms: (\d+) \}$")


def load(sc, gi, phi):
    path = f"{d}/{sc}-{gi}-{phi}.json"
    if not os.path.exists(path):
        return None  # the sweep itself broke (see its .log)
    with open(path) as f:
        r = json.load(f)
    return r if isinstance(r, list) else [r]


def slot_ms(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000) - epoch


def ms(v):
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v} ms"


def takeover(r, steady_max):
    """Crash -> the first run of a slot the crashed node owned, from the run's worst
    lateness: all workload slots fall on whole seconds and a third of the jobs run every
    second, so the first slot the crashed node misses is the next whole second (or the one
    just before the crash, if the crash came within 20 ms of it and the run had not started)
    and the successor runs it as late as the takeover is. None when no slot waited for the
    takeover (it came before the next slot) or the start-up lateness hides it (the steady
    run of the same seed, identical up to the crash, is as late)."""
    late = r["lateness_max_ms"]
    crash = [int(f.split("ms")[0]) for f in r["faults"] if "Crash" in f]
    if not crash or late < 50 or late <= steady_max:
        return None
    phase = crash[0] % 1000
    return late - phase if phase < 20 else late + 1000 - phase


print(f"{seeds} seeds per scenario and setting (0..{seeds}), 5 nodes, 50 jobs, 2 min simulated; build {build}")
print()
print("| gossip | phi | crash: worst-slot lateness, median / worst | crash: takeover, median / worst (seeds measured) "
      "| flap: duplicates/run | flap: runs with a duplicate | "
      + " | ".join(f"stalls {b}: evicted" for b in bucket_names)
      + " | shortest evicting stall | steady: runs with a duplicate | failed runs (crash/flap/steady) |")
print("|" + "---|" * (9 + len(buckets)))
failures, hidden_notes = [], []
stall_counts = None
for gi in intervals:
    for phi in phis:
        crash, flap, steady = (load(s, gi, phi) for s in ("crash", "flap", "steady"))
        row = [gi, phi]
        if crash is None:
            row += ["sweep broke", "sweep broke"]
        else:
            late = sorted(r["lateness_max_ms"] for r in crash)
            row.append(f"{ms(late[(len(late) - 1) // 2])} / {ms(late[-1])}")
            base = {r["seed"]: r["lateness_max_ms"] for r in (steady or [])}
            hidden = sum(1 for r in crash if 50 <= base.get(r["seed"], 0) >= r["lateness_max_ms"])
            if hidden:
                hidden_notes.append(f"{gi}/phi {phi}: {hidden}/{len(crash)}")
            t = sorted(x for x in (takeover(r, base.get(r["seed"], 0)) for r in crash) if x is not None)
            row.append(f"{ms(t[(len(t) - 1) // 2])} / {ms(t[-1])} ({len(t)})" if t else "not measurable (0)")
        if flap is None:
            row += ["sweep broke"] * (3 + len(buckets))
        else:
            dups = [r["duplicates"] for r in flap]
            row += [f"{statistics.mean(dups):.1f}", f"{sum(1 for x in dups if x) / len(dups):.0%}"]
            evicted, total = [0] * len(buckets), [0] * len(buckets)
            shortest = None
            for r in flap:
                dup_slots = [(slot_ms(x["slot"]), x["nodes"]) for x in r["findings"]["duplicates"]]
                for f in r["faults"]:
                    m = stall_re.match(f)
                    if not m:
                        continue
                    at, node, length = (int(g) for g in m.groups())
                    k = next(i for i, (lo, hi) in enumerate(buckets) if lo <= length < hi)
                    total[k] += 1
                    # Evicted: a slot due during the stall (or just after it) ran on the
                    # stalled node and on another one.
                    if any(at <= s <= at + length + 1000 and node in n for s, n in dup_slots):
                        evicted[k] += 1
                        shortest = length if shortest is None else min(shortest, length)
            stall_counts = total
            row += [f"{e / t:.0%}" if t else "-" for e, t in zip(evicted, total)]
            row.append(ms(shortest) if shortest is not None else "none")
        if steady is None:
            row += ["sweep broke"]
        else:
            row += [f"{sum(1 for r in steady if r['duplicates'])}/{len(steady)}"]
        cells = []
        for name, rs in (("crash", crash), ("flap", flap), ("steady", steady)):
            if rs is None:
                cells.append("broke")
                failures.append(f"{gi}/phi {phi} {name}: the sweep gave no report, see {d}/{name}-{gi}-{phi}.log")
                continue
            bad = [r for r in rs if not r["passed"]]
            cells.append(str(len(bad)))
            for r in bad:
                why = []
                if r["missed"]:
                    why.append("missed " + ", ".join(f"{m['job']} {m['slot']}" for m in r["findings"]["missed"][:3]))
                un = r["duplicates"] - r["duplicates_explained"]
                if un:
                    why.append(f"{un} unexplained duplicate(s)")
                if r["findings"].get("spurious"):
                    why.append(f"{len(r['findings']['spurious'])} spurious run(s)")
                if r.get("owners_agree") is False:
                    why.append("owners disagree at the end")
                failures.append(f"{gi}/phi {phi} {name} seed {r['seed']}: {'; '.join(why) or 'failed'}; replay: {r['replay']}")
        row.append("/".join(cells))
        print("| " + " | ".join(str(c) for c in row) + " |")

print()
if stall_counts:
    print("Stalls per length over the flap seeds (the same for every setting): "
          + ", ".join(f"{b}: {n}" for b, n in zip(bucket_names, stall_counts)) + ".")
if hidden_notes:
    print("Crash seeds whose worst-slot lateness is the start-up lateness (no more than the steady run of the same seed): "
          + "; ".join(hidden_notes) + ".")
if failures:
    print()
    print("Failed runs:")
    for f in failures:
        print(f"- {f}")
EOF
