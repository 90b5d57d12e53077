#!/usr/bin/env bash
# cohortrun vs Debian's torchrun (torch 1.13), measured side by side in one run:
#  1. wall clock of `--standalone --nproc-per-node 4 --no-python true` (REPS runs each, alternating)
#  2. kill -9 of one worker in a running 4-worker job -> all 4 restarted (cohortrun; REPS runs)
#  3. a node lost in a 3-node namespace job -> survivors' generation running (cohortrun; needs root)
# Prints a markdown table for bench/RESULTS.md. Usage: bench/compare/launcher_compare.sh [build] [reps]
set -euo pipefail
build=${1:-build}
reps=${2:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$build" && pwd)
cohortrun=$build/csrc/launcher/cohortrun
python=/usr/bin/python3
work=$(mktemp -d /tmp/cohort-launcher-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

seconds() { local start end; start=$(date +%s.%N); "$@" > /dev/null 2>&1; end=$(date +%s.%N); awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "startup: $reps runs each, alternating" >&2
: > "$work/ours"; : > "$work/theirs"
for ((i = 0; i < reps; i++)); do
  (cd "$work" && seconds "$cohortrun" --standalone --nproc-per-node 4 --no-python true) >> "$work/ours"
  echo >> "$work/ours"
  (cd "$work" && seconds $python -m torch.distributed.run --standalone --nproc_per_node 4 --no_python \
     --redirects 1 --tee 1 true) >> "$work/theirs"
  echo >> "$work/theirs"
done
ours=$(grep . "$work/ours" | median)
theirs=$(grep . "$work/theirs" | median)
ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.0f", b / a }')

echo "worker restart: $reps runs" >&2
: > "$work/restart"
for ((i = 0; i < reps; i++)); do
  COHORT_TEST_BUILD_DIR=$build COHORT_TEST_SOURCE_DIR=$root bash "$root/tests/cluster/launcher_restart.sh" 2>&1 \
    | sed -n 's/^restart: all 4 workers of generation 2 running \([0-9.]*\) s after the kill$/\1/p' >> "$work/restart"
done
restart=$(median < "$work/restart")

lost=n/a
if [[ $(id -u) == 0 ]]; then
  echo "node lost: 3 runs" >&2
  : > "$work/lost"
  for ((i = 0; i < 3; i++)); do
    COHORT_TEST_BUILD_DIR=$build COHORT_TEST_SOURCE_DIR=$root bash "$root/tests/cluster/launcher_netns_node_lost.sh" 2>&1 \
      | sed -n "s/^node lost: survivors' generation 2 (4 workers on 2 nodes) running \([0-9.]*\) s after the kill$/\1/p" >> "$work/lost"
  done
  lost="$(median < "$work/lost") (runs: $(tr '\n' ' ' < "$work/lost"| sed 's/ $//'))"
fi

echo "| measure | cohortrun | torchrun 1.13 | ratio | goal |"
echo "|---|---|---|---|---|"
echo "| \`--standalone --nproc-per-node 4 --no-python true\`, wall clock (median of $reps) | ${ours} s | ${theirs} s | ${ratio}x faster | >= 20x |"
echo "| kill -9 of 1 of 4 workers -> all 4 running in generation 2 (median of $reps; runs: $(tr '\n' ' ' < "$work/restart" | sed 's/ $//')) | ${restart} s | - | - | <= 2 s |"
echo "| node lost (launcher + workers SIGKILLed) in a 3-node namespace job -> survivors' generation 2 running (median of 3) | ${lost} s | - | - | <= 7 s |"
