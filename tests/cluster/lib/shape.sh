# Rate limits for the namespace hosts of netns.sh: a token bucket (tc tbf) on both directions of
# each host's link (its eth0, and its port on the switch), modelling a NIC of RATE (e.g. 2gbit).
shape_links() {  # shape_links RATE: every host made by make_cluster
  local rate=$1 i
  for ((i = 0; i < ${#HOSTS[@]}; i++)); do
    ip netns exec "${HOSTS[$i]}" tc qdisc add dev eth0 root tbf rate "$rate" burst 1mb latency 100ms
    ip netns exec "$SWITCH" tc qdisc add dev "p$i" root tbf rate "$rate" burst 1mb latency 100ms
  done
}
