# A rate limit on one namespace host of netns.sh: a token bucket (tc tbf) on both directions of
# host I's link (its eth0, and its port on the switch), replacing any limit set before (e.g. by
# shape_links), so one host can be made slower than the others. Source after netns.sh.
shape_host() {  # shape_host I RATE (e.g. shape_host 2 100mbit)
  local i=$1 rate=$2
  ip netns exec "${HOSTS[$i]}" tc qdisc replace dev eth0 root tbf rate "$rate" burst 128kb latency 50ms
  ip netns exec "$SWITCH" tc qdisc replace dev "p$i" root tbf rate "$rate" burst 128kb latency 50ms
}
