"""cohort-trace (python/cohort/flight_trace.py, built as <build>/tools/cohort-trace): the analysis
of made-up dumps (a rank without a dump, ranks that disagree, a rank behind, the slowest rank,
bad input), then of real ones: a chaos trial's (cohort-chaos, a rank SIGKILLed) and a torch job's
whose rank 2 kills itself, where every survivor's error says which sequence number it reached.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import cohort
import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python", "cohort"))
import flight_trace  # noqa: E402  (the source: cohort-trace is a copy of it)

# The build the tests run against: <build>/python/cohort is the package.
BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(cohort.__file__))))
COHORT_TRACE = os.path.join(BUILD, "tools", "cohort-trace")
COHORT_CHAOS = os.path.join(BUILD, "tests", "cohort-chaos")

START = 1_767_000_000_000_000_000


def op(sequence, state="done", name="allreduce", dtype="float32", count=1024, root=-1, peer=-1,
       start_ms=None, error=None):
    start = START + int((sequence if start_ms is None else start_ms) * 1e6)
    return {"sequence": sequence, "op": name, "dtype": dtype, "count": count, "root": root,
            "peer": peer, "algorithm": "ring", "channels": ["shm"], "state": state,
            "queued_ns": start - 1000, "started_ns": None if state == "queued" else start,
            "finished_ns": start + 500_000 if state in ("done", "failed") else None,
            "error": error}


def dump(rank, world, entries, reason="error", failed=(), root_rank=None, communicator="default",
         generation=0, dumped_ms=1000):
    error = next((e["error"] for e in reversed(entries) if e.get("error")), None)
    return {"kind": "trace", "format_version": 1, "tool": "libcohort flight recorder",
            "rank": rank, "world_size": world, "host": f"h{rank}", "pid": 100 + rank,
            "communicator": communicator, "generation": generation,
            "root_rank": rank if root_rank is None else root_rank, "reason": reason,
            "error": error, "failed_ranks": [{"rank": r, "how": how} for r, how in failed],
            "clock": "realtime", "dumped_at_ns": START + dumped_ms * 1_000_000,
            "buffer_size": 2000, "dropped": 0, "entries": entries}


def write(folder, dumps):
    os.makedirs(folder, exist_ok=True)
    for d in dumps:
        name = f"trace-rank{d['rank']}-{d['communicator']}.json"
        with open(os.path.join(folder, name), "w") as file:
            json.dump(d, file)
    return str(folder)


def trace(capsys, *args):
    """cohort-trace's exit code, stdout and stderr (run in this process)."""
    code = flight_trace.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def analysis_of(capsys, folder):
    code, out, err = trace(capsys, folder, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["kind"] == "trace-analysis"
    return result["communicators"]


def killed_dumps(victim=1, world=4, stuck=7):
    dumps = []
    for r in range(world):
        if r == victim:
            continue
        entries = [op(s) for s in range(1, stuck)]
        entries.append(op(stuck, "failed", error=f"allreduce #{stuck} on rank {r} (h{r}) failed: "
                                                  f"lost connection to rank {victim} (h{victim})"))
        dumps.append(dump(r, world, entries, failed=[(victim, "lost")]))
    return dumps


def test_a_rank_without_a_dump_is_named_with_how_the_others_lost_it(tmp_path, capsys):
    folder = write(tmp_path, killed_dumps())
    (result,) = analysis_of(capsys, folder)
    assert result["missing"] == [1] and result["culprits"] == [1]
    assert result["stopped_at"]["sequence"] == 7
    assert result["stopped_at"]["entered"] == [0, 2, 3]
    rows = {row["rank"]: row for row in result["ranks"]}
    assert rows[1]["dump"] is None and rows[1]["reported"] == {"0": "lost", "2": "lost",
                                                               "3": "lost"}
    assert rows[1]["at_least_done"] == 6  # the others finished sequence 6 with it
    for r in (0, 2, 3):
        row = rows[r]
        assert (row["last_sequence"], row["state"], row["last_done"]) == (7, "failed", 6)
    code, out, _ = trace(capsys, folder)
    assert code == 0
    assert "stopped first: rank 1 (no dump)" in out
    assert "Rank 1 wrote no dump" in out and "(ranks 0, 2, 3 report it lost)" in out
    assert "no dump; reported lost by ranks 0, 2, 3; the others finished sequence 6" in out


def test_ranks_that_disagree_are_named(tmp_path, capsys):
    dumps = []
    for r in range(4):
        entries = [op(s) for s in range(1, 5)]
        entries.append(op(5, "failed", count=512 if r == 2 else 1024,
                          error="allreduce #5: the ranks disagree"))
        dumps.append(dump(r, 4, entries, reason="error"))
    (result,) = analysis_of(capsys, write(tmp_path / "count", dumps))
    assert result["culprits"] == [2]
    (mismatch,) = result["mismatches"]
    assert mismatch["sequence"] == 5 and mismatch["odd"] == [2]
    assert [(g["ranks"], g["count"]) for g in mismatch["groups"]] == [([0, 1, 3], 1024),
                                                                       ([2], 512)]
    # A broadcast whose root two ranks see differently from the other two: no majority, so
    # all four are named.
    dumps = []
    for r in range(4):
        dumps.append(dump(r, 4, [op(1), op(2, "failed", name="broadcast", root=r // 2)]))
    (result,) = analysis_of(capsys, write(tmp_path / "root", dumps))
    assert result["culprits"] == [0, 1, 2, 3]
    code, out, _ = trace(capsys, tmp_path / "root")
    assert ("The ranks disagree on sequence 2: ranks 0, 1 ran broadcast float32 x 1024 root 0; "
            "ranks 2, 3 ran broadcast float32 x 1024 root 1.") in out
    # A type mismatch at an operation every rank finished (nothing pending) is still named.
    dumps = [dump(r, 2, [op(1), op(2, dtype="float16" if r else "float32")], reason="request")
             for r in range(2)]
    (result,) = analysis_of(capsys, write(tmp_path / "dtype", dumps))
    assert result["stopped_at"] is None and result["mismatches"][0]["sequence"] == 2
    assert result["culprits"] == [0, 1]


def test_a_rank_that_never_entered_the_operation_is_named(tmp_path, capsys):
    dumps = [dump(r, 4, [op(s) for s in range(1, 5)] + [op(5, "started")], reason="signal")
             for r in range(3)]
    dumps.append(dump(3, 4, [op(s) for s in range(1, 4)] + [op(4, "done")], reason="signal"))
    dumps[3]["entries"].append(op(9, "done", name="send", peer=0))
    dumps[0]["entries"].append(op(0, "started", name="recv", peer=3))
    folder = write(tmp_path, dumps)
    (result,) = analysis_of(capsys, folder)
    assert result["culprits"] == [3] and result["missing"] == []
    assert result["stopped_at"]["never_entered"] == [3]
    rows = {row["rank"]: row for row in result["ranks"]}
    assert (rows[3]["last_sequence"], rows[3]["state"]) == (4, "done")
    assert rows[0]["pending_point_to_point"] == [{"op": "recv", "peer": 3, "state": "started"}]
    code, out, _ = trace(capsys, folder)
    assert "Rank 3 (h3) never entered sequence 5 (allreduce float32 x 1024): it stopped after " \
           "sequence 4 (done)." in out
    assert "waiting in recv peer 3 (started)" in out


def test_the_slowest_rank_is_named(tmp_path, capsys):
    dumps = []
    for r in range(4):
        # Rank 2 enters every operation 3 ms after the others, and the last one 50 ms after.
        late = 3 if r == 2 else 0
        entries = [op(s, start_ms=10 * s + late + 0.01 * r) for s in range(1, 20)]
        entries.append(op(20, "started", start_ms=200 + (50 if r == 2 else 0.01 * r)))
        dumps.append(dump(r, 4, entries, reason="signal"))
    folder = write(tmp_path, dumps)
    (result,) = analysis_of(capsys, folder)
    assert result["culprits"] == [2]
    assert result["slowest"]["rank"] == 2
    assert result["slowest"]["behind_first_ms"] == pytest.approx(50, abs=0.01)
    assert result["stragglers"]["slowest"] == 2
    assert result["stragglers"]["ranks"]["2"]["entered_last"] == 19
    assert result["stragglers"]["ranks"]["2"]["mean_lag_ms"] == pytest.approx(3, abs=0.05)
    code, out, _ = trace(capsys, folder)
    assert "the last to enter was rank 2 (h2)" in out
    assert "rank 2 entered last 19 times" in out
    # Who entered last by chance is no straggler.
    dumps = []
    for r in range(4):
        entries = [op(s, start_ms=10 * s + 0.01 * ((s + r) % 4)) for s in range(1, 20)]
        dumps.append(dump(r, 4, entries, reason="request"))
    (result,) = analysis_of(capsys, write(tmp_path / "even", dumps))
    assert result["stragglers"]["slowest"] is None and result["culprits"] == []
    code, out, _ = trace(capsys, tmp_path / "even")
    assert "slowest: no rank entered last consistently" in out
    assert "nothing was pending when they dumped" in out


def test_folders_are_searched_and_each_communicator_analysed(tmp_path, capsys):
    # cohortrun's layout: <log dir>/attempt_<n>/traces, one folder per node gathered.
    write(tmp_path / "node0" / "attempt_0" / "traces", killed_dumps(victim=3, world=4)[:2])
    write(tmp_path / "node1" / "attempt_0" / "traces", killed_dumps(victim=3, world=4)[2:])
    shrunk = [dump(r, 3, [op(1)], reason="request", communicator="default_shrink1")
              for r in range(3)]
    write(tmp_path / "node1" / "attempt_0" / "traces", shrunk)
    # A second dump of the same rank (an earlier one elsewhere): the later one is read.
    earlier = dict(killed_dumps(victim=3, world=4)[0], dumped_at_ns=START)
    earlier["entries"] = earlier["entries"][:2]
    write(tmp_path / "old", [earlier])
    with open(tmp_path / "node0" / "summary.json", "w") as file:
        json.dump({"kind": "something else"}, file)  # other JSON in a log folder is skipped
    results = analysis_of(capsys, tmp_path)
    assert [r["communicator"] for r in results] == ["default", "default_shrink1"]
    assert results[0]["culprits"] == [3] and results[0]["dumps"] == 3
    assert any("rank 0 dumped 2 times" in note for note in results[0]["notes"])
    assert results[1]["culprits"] == [] and results[1]["world_size"] == 3
    code, out, _ = trace(capsys, tmp_path, "--communicator", "default_shrink1")
    assert code == 0 and "communicator \"default_shrink1\"" in out and "default\"" not in out
    # Ranks of a shrunk communicator show the rank they had before.
    for d in shrunk:
        d["root_rank"] = {0: 0, 1: 2, 2: 3}[d["rank"]]
    write(tmp_path / "node1" / "attempt_0" / "traces", shrunk)
    code, out, _ = trace(capsys, tmp_path, "--communicator", "default_shrink1", "--ops", "1")
    assert "\n1<2 " in out and "\n2<3 " in out and "was rank S of the one it was shrunk" in out
    assert "seq 1       done     allreduce float32 x 1024 [ring] 0.500 ms" in out


def test_bad_input_is_refused_naming_the_file(tmp_path, capsys):
    good = killed_dumps()[0]
    cut = tmp_path / "cut" / "trace-rank0-default.json"
    cut.parent.mkdir()
    cut.write_text(json.dumps(good)[:-40])
    code, out, err = trace(capsys, cut.parent)
    assert code == 2 and out == ""
    assert f"{cut}: it ends before the JSON does (truncated" in err
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(dict(good, format_version=2)))
    code, _, err = trace(capsys, newer)
    assert code == 2 and "format_version 2 is not one this cohort-trace reads (1)" in err
    bad_state = tmp_path / "state.json"
    bad = dict(good, entries=[dict(good["entries"][0], state="running")])
    bad_state.write_text(json.dumps(bad))
    code, _, err = trace(capsys, bad_state)
    assert code == 2 and "entries[0]: state 'running' is not one of queued" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = trace(capsys, empty)
    assert code == 2 and "no flight-recorder dump (trace-rank*.json) in this folder" in err
    code, _, err = trace(capsys, tmp_path / "nowhere")
    assert code == 2 and "no such file or folder" in err
    write(tmp_path / "one", [good])
    code, _, err = trace(capsys, tmp_path / "one", "--communicator", "other")
    assert code == 2 and "no dump of communicator 'other'; the dumps are of 'default'" in err


def test_the_built_tool_runs_with_python3_alone(tmp_path):
    assert os.access(COHORT_TRACE, os.X_OK), f"{COHORT_TRACE} is not built"
    folder = write(tmp_path, killed_dumps())
    done = subprocess.run([COHORT_TRACE, folder, "--json"], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["communicators"][0]["culprits"] == [1]


def test_a_chaos_trials_dumps_name_the_killed_rank(tmp_path):
    assert os.access(COHORT_CHAOS, os.X_OK), f"{COHORT_CHAOS} is not built"
    outcome = tmp_path / "trial.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    done = subprocess.run(
        [COHORT_CHAOS, "driver", "--trials", "1", "--faults", "kill", "--transports", "shm,tcp",
         "--trace-dir", str(tmp_path / "traces"), "--logs", str(logs), "--json", str(outcome)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COHORT_LOG_LEVEL="ERROR"))
    assert done.returncode == 0, done.stdout + done.stderr
    victim = json.loads(outcome.read_text())["victim"]
    survivors = [r for r in range(4) if r != victim]
    # The sequence number each survivor's error names ("allreduce(...) #12 on rank 1 (host)
    # failed: ..."), from its log: where it stopped, found without the dumps.
    reached = {}
    for log in logs.iterdir():
        rank = int(re.search(r"-rank(\d+)\.log$", log.name).group(1))
        found = re.search(rf"#(\d+) on rank {rank} \(", log.read_text())
        if rank in survivors:
            assert found, f"{log}: no error naming a sequence number:\n{log.read_text()}"
            reached[rank] = int(found.group(1))
    assert sorted(reached) == survivors
    done = subprocess.run([COHORT_TRACE, str(tmp_path / "traces"), "--json"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["communicators"]
    assert result["missing"] == [victim] and result["culprits"] == [victim]
    rows = {row["rank"]: row for row in result["ranks"]}
    assert result["stopped_at"]["sequence"] == min(reached.values())
    for r in survivors:
        assert (rows[r]["last_sequence"], rows[r]["state"]) == (reached[r], "failed"), rows[r]
        assert rows[r]["last_done"] == reached[r] - 1
        assert rows[victim]["reported"][str(r)] == "lost"
    assert rows[victim]["at_least_done"] == max(reached.values()) - 1
    text = subprocess.run([COHORT_TRACE, str(tmp_path / "traces")], capture_output=True,
                          text=True, timeout=30).stdout
    assert f"stopped first: rank {victim} (no dump)" in text


def _killed_in_training(rank, world_size, steps):
    """Every rank runs allreduces; rank 2 kills itself before step `steps`; each survivor returns
    the sequence number its error names."""
    values = torch.ones(256)
    for _ in range(steps):
        dist.all_reduce(values)
    if rank == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        dist.all_reduce(values)
    except cohort.CollectiveError as error:
        return error.sequence, error.op
    raise AssertionError("the allreduce after the kill did not fail")


def test_a_torch_jobs_dumps_name_the_killed_rank_and_where_each_rank_stopped(tmp_path):
    traces = tmp_path / "traces"
    results = harness.run(_killed_in_training, world_size=4, expect_killed=(2,), args=(5,),
                          env={"COHORT_TRACE_DIR": str(traces)}, pg_timeout=20)
    assert results[2] == harness.KILLED
    done = subprocess.run([COHORT_TRACE, str(traces), "--json"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["communicators"]
    assert result["missing"] == [2] and result["culprits"] == [2]
    rows = {row["rank"]: row for row in result["ranks"]}
    reached = {r: results[r][0] for r in (0, 1, 3)}
    for r, sequence in reached.items():
        assert results[r][1] == "allreduce"
        assert rows[r]["last_sequence"] == sequence and rows[r]["state"] == "failed"
    assert result["stopped_at"]["sequence"] == min(reached.values())
    assert rows[2]["at_least_done"] == max(reached.values()) - 1


def _disagree(rank, world_size):
    for _ in range(3):
        dist.all_reduce(torch.ones(64))
    try:
        dist.all_reduce(torch.ones(32 if rank == 2 else 64))
    except cohort.CollectiveError as error:
        return error.sequence
    raise AssertionError("the mismatched allreduce did not fail")


def test_a_torch_jobs_dumps_name_the_rank_that_disagreed(tmp_path):
    traces = tmp_path / "traces"
    results = harness.run(_disagree, world_size=4, env={"COHORT_TRACE_DIR": str(traces)},
                          pg_timeout=20)
    done = subprocess.run([COHORT_TRACE, str(traces), "--json"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["communicators"]
    assert result["missing"] == [] and result["culprits"] == [2]
    (mismatch,) = result["mismatches"]
    assert mismatch["sequence"] == results[0] and mismatch["odd"] == [2]
    assert [(g["ranks"], g["count"]) for g in mismatch["groups"]] == [([0, 1, 3], 64), ([2], 32)]
