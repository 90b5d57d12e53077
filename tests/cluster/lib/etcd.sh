# etcd for the launcher tests (Debian's etcd-server, which scripts/bootstrap installs): members
# inside the namespace hosts of netns.sh (start_etcd_in I...: each on host I's address, ports
# 2379/2380), or one member on loopback ports picked here (start_etcd_loopback). Data goes under
# $SCRATCH, which common.sh removes; the members are killed at exit with everything else the
# test started (STARTED_PIDS; the namespaces' processes die with remove_cluster). Source after
# common.sh (and netns.sh for start_etcd_in).
command -v etcd > /dev/null || fail "etcd is not installed (scripts/bootstrap installs etcd-server)"
ETCD_ENDPOINTS=""   # comma-separated client URLs of the members started
ETCD_PIDS=()        # by member index
ETCD_HOSTS=()       # namespace host index of each member (netns), or "lo"

etcd_wait_healthy() {  # etcd_wait_healthy URL [netns]
  local url=$1 ns=${2:-} run=()
  [[ -n $ns ]] && run=(ip netns exec "$ns")
  healthy() { "${run[@]}" env ETCDCTL_API=3 etcdctl --endpoints="$url" --command-timeout=1s endpoint health > /dev/null 2>&1; }
  wait_for 20 healthy || { tail -20 "$SCRATCH"/etcd*.log >&2; fail "etcd at $url did not become healthy"; }
}

start_etcd_in() {  # start_etcd_in I...: one member on each namespace host I
  local i cluster="" urls=() m=0
  for i in "$@"; do cluster+="${cluster:+,}e$i=http://$(address "$i"):2380"; done
  for i in "$@"; do
    local a
    a=$(address "$i")
    ip netns exec "${PREFIX}n$i" etcd --name "e$i" --data-dir "$SCRATCH/etcd$i" \
      --listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
      --listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
      --initial-cluster "$cluster" --initial-cluster-token "cohort-$$" --initial-cluster-state new \
      --logger zap --log-level error > "$SCRATCH/etcd$i.log" 2>&1 &
    ETCD_PIDS[$m]=$!
    ETCD_HOSTS[$m]=$i
    STARTED_PIDS+=("$!")
    urls+=("http://$a:2379")
    m=$((m + 1))
  done
  ETCD_ENDPOINTS=$(IFS=,; echo "${urls[*]}")
  for i in "$@"; do etcd_wait_healthy "http://$(address "$i"):2379" "${PREFIX}n$i"; done
}

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_etcd_loopback() {  # one member on 127.0.0.1; extra etcd flags may follow
  local client peer
  client=$(free_port)
  peer=$(free_port)
  etcd --name lo --data-dir "$SCRATCH/etcd-lo" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "lo=http://127.0.0.1:$peer" --logger zap --log-level error "$@" \
    > "$SCRATCH/etcd-lo.log" 2>&1 &
  ETCD_PIDS[0]=$!
  ETCD_HOSTS[0]=lo
  STARTED_PIDS+=("$!")
  ETCD_ENDPOINTS="http://127.0.0.1:$client"
  etcd_wait_healthy "$ETCD_ENDPOINTS"
}

etcdctl_in() {  # etcdctl_in NS|lo ARGS...: etcdctl against every member started
  local where=$1
  shift
  if [[ $where == lo ]]; then
    ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINTS" "$@"
  else
    ip netns exec "${PREFIX}n$where" env ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINTS" "$@"
  fi
}

etcd_leader() {  # the index (in ETCD_PIDS) of the member that leads, asked from host $1
  etcdctl_in "$1" endpoint status -w json 2> /dev/null | /usr/bin/python3 -c '
import json, sys
statuses = json.load(sys.stdin)
urls = sys.argv[1].split(",")
for entry in statuses:
    status = entry["Status"]
    if status["header"]["member_id"] == status["leader"]:
        print(urls.index(entry["Endpoint"]))
        break' "$ETCD_ENDPOINTS"
}

stop_etcd() {  # kills every member (before no_namespace_leftovers)
  local pid
  for pid in "${ETCD_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
