#!/bin/sh
# Open MPI's remote-shell agent for the namespace hosts of netns.sh: called as
# "netns_rsh.sh [options] HOST COMMAND...", HOST being a host's address 10.77.0.(10+i); runs the
# command (Open MPI's orted) in that host's namespace with its host name. Needs
# COHORT_NETNS_PREFIX (netns.sh's PREFIX).
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
i=$((${host##*.} - 10))
exec ip netns exec "${COHORT_NETNS_PREFIX}n$i" unshare --uts sh -c "hostname node$i; $*"
