#!/usr/bin/env bash
# --rdzv-backend static on 2 namespace hosts: node rank 0 (here the host named node1) runs the
# store beside --master-addr:--master-port, group ranks follow --node-rank, not host names, and
# a torch store that a worker binds on MASTER_PORT works (the port is the workers').
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 2
d=$SCRATCH/run && mkdir -p "$d"
for i in 0 1; do
  BIND_MASTER_PORT=1 start_node $i "$SCRATCH/node$i.log" --rdzv-backend static --nnodes 2 --node-rank $((1 - i)) \
    --nproc-per-node 2 --master-addr "$(address 1)" --master-port 29500 --no-python "$WORKER" env "$TAG" "$d"
done
for i in 0 1; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
done
for rank in 0 1 2 3; do
  f=$d/env.$rank
  contains "$f" "WORLD_SIZE=4"
  contains "$f" "GROUP_RANK=$((rank / 2))"
  contains "$f" "COHORT_HOST_ID=node$((1 - rank / 2))"   # node1 has node rank 0
  contains "$f" "MASTER_ADDR=$(address 1)"
  contains "$f" "MASTER_PORT=29500"
done
contains "$d/bind.0" "bound 29500"
no_leftovers
no_namespace_leftovers
