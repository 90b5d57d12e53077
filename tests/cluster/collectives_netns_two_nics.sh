#!/usr/bin/env bash
# Two NICs per host: 2 namespace hosts x 2 ranks, each host on two bridges (eth0 in 10.77.0.0/24,
# eth1 in 10.78.0.0/24). The topology gives the ranks of a host equal NICs in turns, and each
# rank's sockets listen on its own NIC, so the two rails of the hierarchy cross different links.
# Results are checked exactly by cohort-bench.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"

make_cluster 2
ip -n "$SWITCH" link add br1 type bridge
ip -n "$SWITCH" link set br1 up
for i in 0 1; do
  ip link add eth1 netns "${PREFIX}n$i" type veth peer name q$i netns "$SWITCH"
  ip -n "$SWITCH" link set q$i master br1
  ip -n "$SWITCH" link set q$i up
  ip -n "${PREFIX}n$i" addr add 10.78.0.$((10 + i))/24 dev eth1
  ip -n "${PREFIX}n$i" link set eth1 up
done

port=29600
for name in topo allreduce; do
  port=$((port + 1))
  args=(topo)
  [[ $name == allreduce ]] && args=(allreduce -b 1M -e 8M -f 8 -n 2 -w 1 -c 1 --algo hierarchical)
  for i in 0 1; do
    COHORT_LOG_LEVEL=DEBUG start_node $i "$SCRATCH/$name.node$i.log" --nnodes 2 --nproc-per-node 2 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "$name" --no-python "$BENCH" "${args[@]}" --tag "$TAG"
  done
  for i in 0 1; do
    wait_node $i
    [[ $STATUS == 0 ]] || { cat "$SCRATCH/$name.node$i.log"; fail "$name: node$i exited $STATUS"; }
  done
done
# Each host's two ranks took one NIC each (both NICs are up, equally fast, on the same node).
for host in 0 1; do
  for nic in "eth0 10.77.0.1$host" "eth1 10.78.0.1$host"; do
    [[ $(grep -c "nic $nic  rdma" "$SCRATCH/topo.node0.log") == 1 ]] || {
      cat "$SCRATCH/topo.node0.log"; fail "one rank of host $host should use $nic"; }
  done
done
# ... and listened on it, in both runs.
for name in topo allreduce; do
  for i in 0 1; do
    contains "$SCRATCH/$name.node$i.log" "listens for its mesh on 10.77.0.1$i "
    contains "$SCRATCH/$name.node$i.log" "listens for its mesh on 10.78.0.1$i "
  done
done
contains "$SCRATCH/allreduce.node0.log" "Out of bounds values : 0 OK"
echo "two NICs: OK"
no_leftovers
no_namespace_leftovers
