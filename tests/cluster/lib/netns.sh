# A private cluster of "hosts" for the launcher tests: one network namespace per host, each with
# its own host name (unshare --uts) and an address in 10.77.0.0/24, all on a bridge that lives in
# a switch namespace of its own, so nothing touches the machine's own network. Names carry a
# per-run prefix so parallel runs never clash; everything is removed on exit, also on failure,
# and the removal is checked. Needs root. Source after common.sh.
PREFIX=cohort-$$-
SWITCH=${PREFIX}sw
HOSTS=()
NODE_PIDS=()

[[ $(id -u) == 0 ]] || fail "network namespace tests need root"

make_cluster() {  # make_cluster N: hosts node0..node(N-1) at 10.77.0.10+i
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  for ((i = 0; i < $1; i++)); do
    local ns=${PREFIX}n$i
    ip netns add "$ns"
    HOSTS+=("$ns")
    ip link add eth0 netns "$ns" type veth peer name p$i netns "$SWITCH"
    ip -n "$SWITCH" link set p$i master br0
    ip -n "$SWITCH" link set p$i up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 10.77.0.$((10 + i))/24 dev eth0
    ip -n "$ns" link set eth0 up
  done
}

address() { echo "10.77.0.$((10 + $1))"; }

start_node() {  # start_node I LOG cohortrun-args...: cohortrun as host nodeI; pid in NODE_PIDS[I]
  local i=$1 log=$2
  shift 2
  ip netns exec "${PREFIX}n$i" unshare --uts \
    sh -c 'hostname "$1"; shift; exec "$@"' sh "node$i" "$COHORTRUN" "$@" > "$log" 2>&1 &
  NODE_PIDS[$i]=$!
  STARTED_PIDS+=("$!")
}

wait_node() {  # wait_node I: exit code of node I's cohortrun in $STATUS
  STATUS=0
  wait "${NODE_PIDS[$1]}" || STATUS=$?
}

remove_cluster() {
  local ns pid
  for ns in "${HOSTS[@]}" "$SWITCH"; do
    ip netns list | grep -qw -- "$ns" || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${HOSTS[@]}" "$SWITCH"; do ip netns del "$ns" 2>/dev/null; done
  if ip netns list | grep -q -- "$PREFIX"; then
    echo "FAIL: namespaces left behind: $(ip netns list | grep -- "$PREFIX")" >&2
    return 1
  fi
}
CLEANUPS+=("remove_cluster || CLEANUP_FAILED=1")

# Processes still running in our namespaces (none may be left when a test ends).
no_namespace_leftovers() {
  local ns left=""
  for ns in "${HOSTS[@]}"; do left+=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' '); done
  [[ -z ${left// /} ]] || { ps -o pid,args -p "$(echo $left | tr ' ' ',')" >&2; fail "processes left in the namespaces: $left"; }
}
