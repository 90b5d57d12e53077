#!/usr/bin/env bash
# cohortrun on etcd when it cannot work: no etcd at the endpoints (a clear error naming each
# endpoint, at once), and an etcd with authentication given wrong or no credentials (an error
# naming the user and where the password comes from). With the right ones (the password from
# COHORT_ETCD_PASSWORD) a job runs.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/etcd.sh"

run() {  # run LOG cohortrun-args...: exit code in STATUS
  local log=$1
  shift
  STATUS=0
  "$COHORTRUN" "$@" > "$log" 2>&1 || STATUS=$?
}

closed=$(free_port)
began=$(now)
run "$SCRATCH/unreachable.log" --rdzv-backend etcd --rdzv-endpoint "http://127.0.0.1:$closed,127.0.0.1:1" \
  --nnodes 2 --no-python true "$TAG"
[[ $STATUS == 1 ]] || { cat "$SCRATCH/unreachable.log"; fail "unreachable etcd: exit $STATUS, expected 1"; }
contains "$SCRATCH/unreachable.log" "cannot reach etcd at http://127.0.0.1:$closed, http://127.0.0.1:1"
contains "$SCRATCH/unreachable.log" "check that etcd runs there"
took=$(elapsed "$began" "$(now)")
less_than "$took" 3 || fail "the error took $took s"

start_etcd_loopback
for step in "user add root:rootpw" "user grant-role root root" "user add cohort:cohortpw" \
            "role add cohort" "role grant-permission cohort --prefix=true readwrite /cohort/" \
            "user grant-role cohort cohort" "auth enable"; do
  etcdctl_in lo $step > /dev/null 2>&1 || fail "etcdctl $step failed"
done
conf=(--rdzv-backend etcd --rdzv-endpoint "$ETCD_ENDPOINTS" --nnodes 1 --no-python)
run "$SCRATCH/wrong.log" "${conf[@]}" --rdzv-conf user=cohort,password=wrong true "$TAG"
[[ $STATUS == 1 ]] || { cat "$SCRATCH/wrong.log"; fail "wrong password: exit $STATUS"; }
contains "$SCRATCH/wrong.log" "refused user \"cohort\""
contains "$SCRATCH/wrong.log" "invalid user ID or password"
contains "$SCRATCH/wrong.log" "COHORT_ETCD_PASSWORD"
run "$SCRATCH/anonymous.log" "${conf[@]}" true "$TAG"
[[ $STATUS == 1 ]] || { cat "$SCRATCH/anonymous.log"; fail "no user: exit $STATUS"; }
contains "$SCRATCH/anonymous.log" "requires authentication"
contains "$SCRATCH/anonymous.log" "--rdzv-conf user=NAME"
COHORT_ETCD_PASSWORD=cohortpw run "$SCRATCH/right.log" "${conf[@]}" --rdzv-conf user=cohort \
  --rdzv-id authed sh -c "echo rank \$RANK of \$WORLD_SIZE; : $TAG"
[[ $STATUS == 0 ]] || { cat "$SCRATCH/right.log"; fail "right credentials: exit $STATUS"; }
contains "$SCRATCH/right.log" "rank 0 of 1"
[[ -n ${SHOW_ERRORS:-} ]] && cat "$SCRATCH"/{unreachable,wrong,anonymous}.log
stop_etcd
no_leftovers
