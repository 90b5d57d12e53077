# Helpers for the launcher's shell tests: where the binaries are, a scratch folder, checks that
# fail with a message, waiting with a deadline, and the no-leftover-process check. Every test
# tags its workers with a unique marker ($TAG) so leftovers can be found without guessing.
set -euo pipefail

BUILD=${COHORT_TEST_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/build}
SOURCE=${COHORT_TEST_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
COHORTRUN=$BUILD/csrc/launcher/cohortrun
[[ -x $COHORTRUN ]] || { echo "FAIL: $COHORTRUN is not built" >&2; exit 1; }
TAG=cohorttest$$x$RANDOM
SCRATCH=$(mktemp -d /tmp/cohort-launcher-test.XXXXXX)
STARTED_PIDS=()
CLEANUPS=()

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  "$@" || fail "$what"
}

contains() {  # contains FILE TEXT
  grep -qF -- "$2" "$1" || { echo "---- $1:" >&2; tail -40 "$1" >&2; fail "expected \"$2\" in $1"; }
}

not_contains() {
  if grep -qF -- "$2" "$1"; then echo "---- $1:" >&2; tail -40 "$1" >&2; fail "unexpected \"$2\" in $1"; fi
}

now() { date +%s.%N; }
elapsed() { echo "$1 $2" | awk '{printf "%.3f", $2 - $1}'; }
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

wait_for() {  # wait_for SECONDS COMMAND...: polls every 20 ms
  local deadline
  deadline=$(awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.3f", n + s }')
  shift
  until "$@"; do
    less_than "$(now)" "$deadline" || return 1
    sleep 0.02
  done
}

# Processes whose command line carries our tag (workers, their children, our launchers).
tagged_pids() { pgrep -f -- "$TAG" || true; }

none_tagged() { [[ -z $(tagged_pids) ]]; }

no_leftovers() {
  local left
  wait_for 5 none_tagged || {
    left=$(tagged_pids)
    ps -o pid,ppid,stat,args -p "$(echo $left | tr ' ' ',')" >&2 || true
    fail "processes left behind: $left"
  }
}

cleanup_common() {
  local status=$?
  set +e
  for cleanup in "${CLEANUPS[@]}"; do eval "$cleanup"; done
  for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in $(tagged_pids); do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$SCRATCH"
  if [[ -n ${CLEANUP_FAILED:-} ]] && ((status == 0)); then status=1; fi
  if ((status == 0)); then echo "PASS"; fi
  exit $status
}
trap cleanup_common EXIT
