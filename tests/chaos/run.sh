#!/bin/bash
# The chaos suite: random failures at random moments of random collectives, each trial checked
# (no survivor hangs, every survivor's error names the injured rank and its host, the survivors
# shrink and get correct results, nothing is left behind). See tests/chaos/cohort_chaos.cc.
#
#   tests/chaos/run.sh N [--seed S] [--json FILE]   N SIGKILL trials (4 ranks, shm and TCP), then
#                                                  N/10 (at least 2) SIGSTOP trials and, as root
#                                                  with iptables, N/10 (at least 2) trials that
#                                                  drop a host's traffic in namespace hosts
#   tests/chaos/run.sh --short                     make test's run: 20 + 2 + 2 trials
#
# COHORT_CHAOS_TIMEOUT (default 2s) is the communicators' timeout: what a SIGSTOP or a dropped
# host costs before the survivors' errors.
set -euo pipefail
BUILD=${COHORT_TEST_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}
CHAOS=$BUILD/tests/cohort-chaos
[[ -x $CHAOS ]] || { echo "FAIL: $CHAOS is not built" >&2; exit 1; }
TIMEOUT=${COHORT_CHAOS_TIMEOUT:-2s}

if [[ ${1:-} == --short ]]; then
  KILLS=20 OTHERS=2
  shift
else
  KILLS=${1:-100}
  shift || true
  OTHERS=$((KILLS / 10 > 2 ? KILLS / 10 : 2))
fi
EXTRA=("$@")
STATUS=0
export COHORT_LOG_LEVEL=${COHORT_LOG_LEVEL:-ERROR}

"$CHAOS" driver --trials "$KILLS" --faults kill --transports shm,tcp --shrink --timeout "$TIMEOUT" \
  "${EXTRA[@]}" || STATUS=1
"$CHAOS" driver --trials "$OTHERS" --faults stop --transports shm,tcp --shrink --timeout "$TIMEOUT" \
  "${EXTRA[@]}" || STATUS=1

# A host whose traffic is dropped (no FIN, no RST): three namespace hosts, the last one cut off.
if [[ $(id -u) == 0 ]] && command -v iptables > /dev/null && command -v ip > /dev/null; then
  PREFIX=cohort-chaos-$$-
  NAMES=()
  cleanup() {
    local ns pid
    for ns in "${NAMES[@]}" "${PREFIX}sw"; do
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    for ns in "${NAMES[@]}" "${PREFIX}sw"; do ip netns del "$ns" 2>/dev/null || true; done
    if ip netns list | grep -q -- "$PREFIX"; then echo "FAIL: namespaces left behind" >&2; exit 1; fi
  }
  trap cleanup EXIT
  ip netns add "${PREFIX}sw"
  ip -n "${PREFIX}sw" link add br0 type bridge
  ip -n "${PREFIX}sw" link set br0 up
  for i in 0 1 2; do
    ns=${PREFIX}n$i
    ip netns add "$ns"
    NAMES+=("$ns")
    ip link add eth0 netns "$ns" type veth peer name p$i netns "${PREFIX}sw"
    ip -n "${PREFIX}sw" link set p$i master br0
    ip -n "${PREFIX}sw" link set p$i up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 10.78.0.$((10 + i))/24 dev eth0
    ip -n "$ns" link set eth0 up
  done
  # Ranks 0 and 1 on node0, 2 on node1, 3 on node2 (the one cut off); the store on node0.
  ip netns exec "${PREFIX}n0" "$CHAOS" driver --trials "$OTHERS" --faults drop --shrink \
    --timeout "$TIMEOUT" --netns "${NAMES[0]},${NAMES[1]},${NAMES[2]}" --store-ip 10.78.0.10 \
    "${EXTRA[@]}" || STATUS=1
else
  echo "# drop trials skipped: they need root, ip and iptables (namespace hosts)"
fi
if ((STATUS == 0)); then echo "PASS"; else echo "FAIL: see the trials above" >&2; fi
exit $STATUS
