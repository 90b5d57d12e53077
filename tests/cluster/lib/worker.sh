#!/bin/sh
# A worker for the launcher tests: worker.sh MODE TAG DIR. What it does depends on MODE; it
# writes what it saw into DIR so the test can check it. TAG only marks the command line.
mode=$1
tag=$2
dir=$3
case "$mode" in
  env)
    env | sort > "$dir/env.$RANK"
    if [ "$RANK" = 0 ] && [ -n "${BIND_MASTER_PORT:-}" ]; then
      # As torch's TCPStore does on rank 0: SO_REUSEADDR, bind MASTER_PORT, listen.
      python3 -c 'import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(os.environ["MASTER_PORT"])))
s.listen()
print("bound", os.environ["MASTER_PORT"])' > "$dir/bind.0" 2>&1 || true
    fi
    echo "rank $RANK of $WORLD_SIZE local $LOCAL_RANK"
    ;;
  print)
    echo "out line from $RANK"
    echo "err line from $RANK" >&2
    printf 'no newline from %s' "$RANK"
    ;;
  exit)
    if [ "$RANK" = "${FAIL_RANK:-1}" ]; then sleep 0.2; exit "${FAIL_CODE:-3}"; fi
    sleep 30
    ;;
  record)
    if [ "$RANK" = 1 ]; then
      cat > "$TORCHELASTIC_ERROR_FILE" <<JSON
{"message": {"message": "ValueError: loss is nan at step 7", "extraInfo": {"py_callstack": "Traceback (most recent call last):\n  File \"train.py\", line 42, in step\nValueError: loss is nan at step 7\n", "timestamp": "$(date +%s)"}}}
JSON
      exit 1
    fi
    sleep 30
    ;;
  trap)
    trap 'echo "$RANK got TERM" > "$dir/term.$RANK"; exit 0' TERM
    trap 'echo "$RANK got USR1" > "$dir/usr1.$RANK"; exit 0' USR1
    trap 'echo "$RANK got INT" > "$dir/int.$RANK"; exit 0' INT
    touch "$dir/ready.$RANK"
    while :; do sleep 0.05; done
    ;;
  ignoreterm)
    trap '' TERM
    touch "$dir/ready.$RANK"
    while :; do sleep 0.05; done
    ;;
  orphan)
    sh -c "sleep 300; : $tag child" &
    echo "$!" > "$dir/child.$RANK"
    touch "$dir/ready.$RANK"
    wait
    ;;
  zombie)
    (sleep 0.1 &)
    touch "$dir/ready.$RANK"
    sleep 1.5
    ;;
  gen)
    echo "$(date +%s.%N) $$ $WORLD_SIZE $COHORT_HOST_ID" > "$dir/start.$COHORT_GENERATION.$RANK"
    if [ "$COHORT_GENERATION" = 1 ]; then sleep 30; fi
    ;;
  steady)
    echo "$(date +%s.%N) $$ $WORLD_SIZE $COHORT_HOST_ID" > "$dir/start.$COHORT_GENERATION.$RANK"
    sleep "${STEADY_SECONDS:-5}"
    ;;
  alwaysfail)
    echo "$TORCHELASTIC_RESTART_COUNT" >> "$dir/attempts.$RANK"
    if [ "$RANK" = "${FAIL_RANK:-1}" ]; then sleep 0.1; exit 7; fi
    sleep 30
    ;;
  *)
    echo "worker.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
