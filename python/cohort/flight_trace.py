#!/usr/bin/python3
"""cohort-trace: what happened in a job, from every rank's flight-recorder dump.

    cohort-trace DIR [DIR | FILE ...] [--json] [--ops N] [--communicator NAME]

Each communicator's flight recorder (libcohort, csrc/collectives/flight_recorder.cc) keeps its
last operations and writes them as JSON, one file per rank (trace-rank<R>-<communicator>.json),
when the communicator fails or times out, on SIGUSR1, and on cohort.dump_trace(); under
cohortrun they land in <log dir>/attempt_<n>/traces (COHORT_TRACE_DIR). Give the folders (they
are searched through, so a log folder or the dumps gathered from every node will do) or the
files. The dumps of one communicator and generation are read together, as PyTorch's fr_trace
analyzer reads the NCCL flight recorder's, and cohort-trace says:

  - where the job stopped: the first collective sequence number that not every rank finished,
    what it was, which ranks entered it and which never did;
  - which ranks wrote no dump: a rank SIGKILLed, or a host that vanished, writes none, so it is
    the likely culprit; the others' dumps say how they lost it (lost, stopped, timeout, removed);
  - which ranks disagreed on what an operation was (op, type, count, root at the same sequence
    number);
  - who was slowest: the last rank to enter the operation where the job stopped, and the rank
    that entered last most often in the operations before;
  - per rank: the last sequence number it reached, its state, the last it finished, its error.

Output: text for a terminal, or with --json one JSON object ("kind": "trace-analysis"). Exit
codes: 0 the dumps were read (whatever they tell), 2 bad input (a file that is not a dump, is cut
short or of another format version; no dump found). Needs Python 3 only (no torch): the build
copies this file to <build>/tools/cohort-trace. docs/failures.md shows an example; the dump's
fields are in docs/bench.md. `cohort-bench report` draws the same analysis as a page.
"""
import argparse
import json
import os
import statistics
import sys

FORMAT_VERSIONS = (1,)  # the dump's format_version (docs/bench.md, "Flight-recorder dumps")
STATES = ("queued", "started", "done", "failed")
ENTERED = ("started", "done", "failed")
POINT_TO_POINT = ("send", "recv")
SIGNATURE = ("op", "dtype", "count", "root")  # what every rank must agree a collective is
STRAGGLER_WINDOW = 200  # operations before the stop that the slowest-rank count looks at


class TraceError(Exception):
    """A dump cohort-trace cannot read: the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------
# Reading the dumps.

def _fail(path, message):
    raise TraceError(f"{path}: {message}")


def cut_short(text):
    """Whether the text ends inside a string or with objects or arrays still open (a file cut
    short; report_load uses it too)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return in_string or depth > 0


def read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        _fail(path, f"cannot read it: {error.strerror}")
    if not text.strip():
        _fail(path, "the file is empty (was its process killed while writing it?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if cut_short(text) or error.pos >= len(text.rstrip()) - 1:
            _fail(path, "it ends before the JSON does (truncated: was its process killed while "
                        "writing it?)")
        _fail(path, f"not valid JSON at line {error.lineno} column {error.colno}: {error.msg}")


def is_dump(data):
    return isinstance(data, dict) and (data.get("kind") == "trace" or
                                       ("kind" not in data and "entries" in data))


def check_dump(path, data):
    """Refuses a dump this reader cannot analyse, naming the file and the problem."""
    if not is_dump(data):
        _fail(path, "not a flight-recorder dump (no \"kind\": \"trace\")")
    version = data.get("format_version")
    if version not in FORMAT_VERSIONS:
        known = ", ".join(str(v) for v in FORMAT_VERSIONS)
        _fail(path, f"format_version {version!r} is not one this cohort-trace reads ({known}): "
                    f"read it with the cohort-trace of the build that wrote it")
    for key in ("rank", "world_size", "entries"):
        if key not in data:
            _fail(path, f"no \"{key}\" field: not a complete dump")
    if not isinstance(data["rank"], int) or not isinstance(data["world_size"], int) or \
            not 0 <= data["rank"] < max(data["world_size"], 1):
        _fail(path, f"rank {data['rank']!r} of world_size {data['world_size']!r}: not a rank of "
                    f"the communicator")
    if not isinstance(data["entries"], list):
        _fail(path, "\"entries\" is not a list")
    for index, entry in enumerate(data["entries"]):
        where = f"entries[{index}]: "
        if not isinstance(entry, dict):
            _fail(path, f"{where}not an object")
        for key in ("sequence", "op", "state"):
            if key not in entry:
                _fail(path, f"{where}no \"{key}\" field: not a complete dump")
        if entry["state"] not in STATES:
            _fail(path, f"{where}state {entry['state']!r} is not one of {', '.join(STATES)}")


class Dump:
    def __init__(self, path, data):
        self.path = path
        self.data = data


def load(paths):
    """The dumps among `paths`: files (each must be a dump) and folders (searched through for
    *.json files that are dumps; other JSON there is skipped)."""
    dumps = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for folder, _, names in sorted(os.walk(path)):
                for name in sorted(names):
                    if not name.endswith(".json"):
                        continue
                    file = os.path.join(folder, name)
                    data = read_json(file) if name.startswith("trace-") else _maybe(file)
                    if data is not None and (name.startswith("trace-") or is_dump(data)):
                        check_dump(file, data)
                        found.append(Dump(file, data))
            if not found:
                _fail(path, "no flight-recorder dump (trace-rank*.json) in this folder: did any "
                            "communicator fail, time out or get SIGUSR1 with COHORT_TRACE_DIR "
                            "set? (cohortrun sets it to <log dir>/attempt_<n>/traces)")
            dumps.extend(found)
        elif os.path.exists(path):
            data = read_json(path)
            check_dump(path, data)
            dumps.append(Dump(path, data))
        else:
            _fail(path, "no such file or folder")
    if not dumps:
        raise TraceError("no input: give the folders or files of the dumps")
    return dumps


def _maybe(path):
    """A JSON file in a searched folder that is not named trace-*: read it when it parses."""
    try:
        return read_json(path)
    except TraceError:
        return None


def group(dumps):
    """[(communicator, generation, [Dump], notes)]: one group per communicator and generation;
    of two dumps of the same rank the later one stays (a rank dumps again on a later request)."""
    groups = {}
    for dump in dumps:
        key = (str(dump.data.get("communicator") or ""), dump.data.get("generation") or 0)
        groups.setdefault(key, {}).setdefault(dump.data["rank"], []).append(dump)
    result = []
    for (name, generation), by_rank in sorted(groups.items(), key=lambda item: (
            str(item[0][1]), item[0][0])):
        notes, members = [], []
        for rank, copies in sorted(by_rank.items()):
            copies.sort(key=lambda d: d.data.get("dumped_at_ns") or 0)
            members.append(copies[-1])
            if len(copies) > 1:
                notes.append(f"rank {rank} dumped {len(copies)} times; read the last "
                             f"({copies[-1].path}), not "
                             + ", ".join(c.path for c in copies[:-1]))
        result.append((name, generation, members, notes))
    return result


# ---------------------------------------------------------------------------------------------
# The analysis.

def describe(entry):
    """'allreduce float32 x 1024 root 2'"""
    what = f"{entry.get('op', '?')}"
    if entry.get("op") == "barrier":  # no data: its type and count say nothing
        return what
    if entry.get("dtype"):
        what += f" {entry['dtype']}"
    if entry.get("count") is not None:
        what += f" x {entry['count']}"
    for key in ("root", "peer"):
        if entry.get(key) not in (None, -1):
            what += f" {key} {entry[key]}"
    return what


def signature(entry):
    return tuple(entry.get(key) for key in SIGNATURE)


def ranks_text(ranks):
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


class Rank:
    """One rank's dump: its collectives by sequence number, where it stopped, its point-to-point
    operations that did not finish."""

    def __init__(self, dump, path=None):
        self.dump = dump
        self.path = path
        self.rank = dump["rank"]
        self.host = dump.get("host") or "?"
        entries = [e for e in dump["entries"] if e.get("op") not in POINT_TO_POINT]
        self.entries = sorted(entries, key=lambda e: e["sequence"])
        self.by_sequence = {e["sequence"]: e for e in self.entries}
        self.pending_p2p = [e for e in dump["entries"]
                            if e.get("op") in POINT_TO_POINT and e["state"] != "done"]
        done = [e["sequence"] for e in self.entries if e["state"] == "done"]
        self.last_done = max(done) if done else None
        entered = [e for e in self.entries if e["state"] in ENTERED]
        self.last = entered[-1] if entered else None  # the last collective it entered
        self.last_entered = self.last["sequence"] if self.last else None
        pending = [e for e in self.entries if e["state"] != "done"]
        # Where it stopped: its first collective that did not finish.
        self.stop = pending[0] if pending else (self.entries[-1] if self.entries else None)
        self.first_recorded = self.entries[0]["sequence"] if self.entries else None
        self.failed_ranks = {f.get("rank"): f.get("how", "?")
                             for f in dump.get("failed_ranks") or [] if isinstance(f, dict)}

    def entered(self, sequence):
        """Whether it entered `sequence` (also when the entry fell out of its ring buffer)."""
        entry = self.by_sequence.get(sequence)
        if entry is not None:
            return entry["state"] in ENTERED
        return self.first_recorded is not None and self.first_recorded > sequence

    def name(self):
        root = self.dump.get("root_rank")
        shown = f"rank {self.rank}"
        if root is not None and root != self.rank:
            shown += f" (was rank {root})"
        return shown


def _mismatches(ranks):
    """Every sequence number the ranks disagree on: [{"sequence", "groups": [{"ranks", "op",
    ...}], "odd": ranks off the majority (all when there is none)}], earliest first."""
    found = []
    sequences = sorted({e["sequence"] for rank in ranks.values() for e in rank.entries})
    for sequence in sequences:
        groups = {}
        for rank in ranks.values():
            entry = rank.by_sequence.get(sequence)
            if entry is not None:
                groups.setdefault(signature(entry), []).append(rank.rank)
        if len(groups) < 2:
            continue
        members = sorted(groups.items(), key=lambda item: (-len(item[1]), min(item[1])))
        majority = len(members[0][1]) > len(members[1][1])
        odd = sorted(r for _, group in (members[1:] if majority else members) for r in group)
        found.append({"sequence": sequence, "odd": odd, "groups": [
            dict(zip(SIGNATURE, key), ranks=sorted(group),
                 what=describe(ranks[group[0]].by_sequence[sequence]))
            for key, group in members]})
    return found


def _stragglers(ranks, before):
    """Over the collectives before `before` (the last STRAGGLER_WINDOW that every dumped rank
    entered): how often each rank entered last and how far behind the first it started, on
    average. Wall clocks of different hosts need not agree: read across hosts with care."""
    if len(ranks) < 2:
        return None
    common = None
    for rank in ranks.values():
        started = {e["sequence"] for e in rank.entries if e.get("started_ns")}
        common = started if common is None else common & started
    sequences = sorted(s for s in common or () if before is None or s < before)
    sequences = sequences[-STRAGGLER_WINDOW:]
    if not sequences:
        return None
    lag = {r: [] for r in ranks}
    last = {r: 0 for r in ranks}
    for sequence in sequences:
        starts = {r: rank.by_sequence[sequence]["started_ns"] for r, rank in ranks.items()}
        first = min(starts.values())
        for r, start in starts.items():
            lag[r].append((start - first) / 1e6)
        last[max(starts, key=lambda r: (starts[r], r))] += 1
    per_rank = {r: {"entered_last": last[r], "mean_lag_ms": statistics.fmean(lag[r]),
                    "max_lag_ms": max(lag[r])} for r in ranks}
    slowest = max(per_rank, key=lambda r: (per_rank[r]["entered_last"],
                                           per_rank[r]["mean_lag_ms"]))
    # A straggler enters last far more often than chance (1 in n) would have it.
    consistent = (len(sequences) >= 5 and
                  per_rank[slowest]["entered_last"] >= 2 * len(sequences) / len(ranks))
    return {"operations": len(sequences), "first_sequence": sequences[0],
            "last_sequence": sequences[-1], "slowest": slowest if consistent else None,
            "candidate": slowest, "ranks": per_rank}


def analyze(dumps, paths=None):
    """The analysis of one communicator's dumps (dicts): {"world_size", "ranks": {rank: Rank},
    "missing", "sequence" (where it stopped, or None), "entered", "never_entered", "culprits",
    "mismatch" (the first sequence the ranks disagree on), "mismatches", "reported" (rank ->
    {reporting rank: how}), "slowest" (the last to enter `sequence`), "stragglers", "summary"}."""
    paths = paths or {}
    ranks = {d["rank"]: Rank(d, paths.get(d["rank"])) for d in dumps}
    world = max([d.get("world_size", 0) for d in dumps] + [max(ranks) + 1])
    missing = [r for r in range(world) if r not in ranks]
    hosts = {r: ranks[r].host for r in ranks}
    reported = {}
    for r, rank in sorted(ranks.items()):
        for failed, how in rank.failed_ranks.items():
            if isinstance(failed, int):
                reported.setdefault(failed, {})[r] = how
    mismatches = _mismatches(ranks)
    odd = mismatches[0]["odd"] if mismatches else []
    pending = [rank.stop["sequence"] for rank in ranks.values()
               if rank.stop is not None and rank.stop["state"] != "done"]
    result = {"world_size": world, "ranks": ranks, "missing": missing, "sequence": None,
              "operation": None, "entered": [], "never_entered": [], "culprits": [],
              "mismatch": mismatches[0]["sequence"] if mismatches else None,
              "mismatches": mismatches, "reported": reported, "slowest": None,
              "stragglers": None}
    sentences = []

    def how_lost(r):
        """' (ranks 0, 1 report it lost)'"""
        reports = reported.get(r, {})
        if not reports:
            return ""
        kinds = {}
        for reporter, how in reports.items():
            kinds.setdefault(how, []).append(reporter)
        return " (" + "; ".join(f"{ranks_text(who)} report{'s' if len(who) == 1 else ''} it "
                                f"{how}" for how, who in sorted(kinds.items())) + ")"

    if mismatches:
        first = mismatches[0]
        parts = [f"{ranks_text(g['ranks'])} ran {g['what']}" for g in first["groups"]]
        sentences.append(f"The ranks disagree on sequence {first['sequence']}: "
                         f"{'; '.join(parts)}.")
    if not pending:
        last = [rank.last_done for rank in ranks.values() if rank.last_done is not None]
        for r in missing:
            sentences.append(f"Rank {r} wrote no dump (the process died, or was never asked to "
                             f"write one){how_lost(r)}.")
        sentences.append(f"Every dumped rank finished its last operation (sequence "
                         f"{max(last) if last else '-'}); nothing was pending when they dumped.")
        result["culprits"] = sorted(set(missing) | set(odd))
    else:
        sequence = min(pending)
        result["sequence"] = sequence
        example = next(rank.by_sequence[sequence] for rank in ranks.values()
                       if sequence in rank.by_sequence)
        result["operation"] = {key: example.get(key) for key in SIGNATURE}
        entered = sorted(r for r, rank in ranks.items() if rank.entered(sequence))
        behind = sorted(r for r in ranks if r not in entered)
        failed = sorted(r for r, rank in ranks.items()
                        if rank.by_sequence.get(sequence, {}).get("state") == "failed")
        result["entered"], result["never_entered"] = entered, behind
        what = f"sequence {sequence} ({describe(example)})"
        # Where each dumped rank stopped: the same sequence number, or some went further (a
        # rank can finish its part of a collective while another still waits in it).
        stops = {}
        for r, rank in ranks.items():
            if rank.stop is not None and rank.stop["state"] != "done":
                stops.setdefault(rank.stop["sequence"], []).append(r)
        waiting = sorted(stops.get(sequence, []))
        for r in missing:
            sentence = f"Rank {r} wrote no dump: the process died or hung before dumping"
            if len(stops) == 1 and waiting == entered and entered and not behind:
                sentence += f", at or before {what}, which {ranks_text(entered)} entered and " \
                            f"waited in"
            elif len(stops) == 1:
                sentence += f", at or before {what}"
            sentences.append(sentence + how_lost(r) + ".")
        if len(stops) > 1:
            sentences.append("The ranks that dumped stopped in different operations: " + "; ".join(
                f"{ranks_text(who)} in sequence {s} "
                f"({describe(ranks[who[0]].by_sequence[s])})"
                for s, who in sorted(stops.items())) + ".")
        for r in behind:
            last = ranks[r].last_entered
            sentences.append(f"Rank {r} ({hosts[r]}) never entered {what}: "
                             + (f"it stopped after sequence {last}"
                                f" ({ranks[r].last['state']})." if last is not None
                                else "it entered no operation."))
        if behind and entered:
            sentences.append(f"{ranks_text(entered).capitalize()} entered it and waited.")
        started = {r: ranks[r].by_sequence[sequence].get("started_ns") for r in entered
                   if ranks[r].by_sequence.get(sequence, {}).get("started_ns")}
        if started:
            late = max(started, key=lambda r: (started[r], r))
            result["slowest"] = {"rank": late, "sequence": sequence,
                                 "behind_first_ms": (started[late] - min(started.values())) / 1e6}
        if missing or behind:
            result["culprits"] = sorted(set(missing) | set(behind) | set(odd))
        else:
            late = result["slowest"]["rank"] if result["slowest"] else entered[-1]
            sentence = (f"Every rank entered {what} and it did not finish"
                        + (f" ({ranks_text(failed)} failed)" if failed else ""))
            if odd:  # they disagree on what it is: who came last does not matter
                sentences.append(sentence + ".")
            else:
                sentences.append(sentence + f"; the last to enter was rank {late} "
                                            f"({hosts[late]}).")
            result["culprits"] = odd or [late]
        done = [rank.last_done for rank in ranks.values() if rank.last_done is not None]
        if missing and done:
            # Most collectives finish on a rank only with every rank's part (a broadcast's root
            # and a reduce's leaves are exceptions): the furthest the others finished is how far
            # the rank without a dump got, probably.
            result["missing_reached"] = max(done)
        errors = [(r, ranks[r].by_sequence[sequence].get("error")) for r in failed
                  if ranks[r].by_sequence[sequence].get("error")]
        if errors:
            # The shortest: a rank that saw the failure itself, not one passing on another's.
            r, error = min(errors, key=lambda item: (len(item[1]), item[0]))
            sentences.append(f"Rank {r}'s error: {error}")
    # Ranks the others report failed that dumped and are behind the others are named as well
    # (a rank that timed out waiting still dumps).
    for r in sorted(reported):
        if r in ranks and r in result["never_entered"] and r not in result["culprits"]:
            result["culprits"] = sorted(result["culprits"] + [r])
    result["stragglers"] = _stragglers(ranks, result["sequence"])
    result["summary"] = " ".join(s[0].upper() + s[1:] for s in sentences)
    return result


# ---------------------------------------------------------------------------------------------
# Output.

def _rank_json(r, analysis):
    rank = analysis["ranks"].get(r)
    if rank is None:
        return {"rank": r, "dump": None, "host": None, "last_sequence": None, "state": None,
                "last_done": None,
                "at_least_done": analysis.get("missing_reached"),
                "reported": {str(k): v for k, v in analysis["reported"].get(r, {}).items()}}
    last = rank.last
    return {"rank": r, "dump": rank.path, "host": rank.host, "pid": rank.dump.get("pid"),
            "root_rank": rank.dump.get("root_rank"), "reason": rank.dump.get("reason"),
            "last_sequence": rank.last_entered, "state": last["state"] if last else None,
            "last_operation": describe(last) if last else None, "last_done": rank.last_done,
            "stopped_at": rank.stop["sequence"] if rank.stop and rank.stop["state"] != "done"
            else None,
            "pending_point_to_point": [
                {"op": e["op"], "peer": e.get("peer"), "state": e["state"]}
                for e in rank.pending_p2p],
            "failed_ranks": [{"rank": k, "how": v} for k, v in sorted(rank.failed_ranks.items())],
            "error": rank.dump.get("error"), "dropped": rank.dump.get("dropped", 0),
            "reported": {str(k): v for k, v in analysis["reported"].get(r, {}).items()}}


def to_json(name, generation, analysis, notes):
    stragglers = analysis["stragglers"]
    return {
        "communicator": name, "generation": generation, "world_size": analysis["world_size"],
        "dumps": len(analysis["ranks"]), "missing": analysis["missing"],
        "culprits": analysis["culprits"], "summary": analysis["summary"],
        "stopped_at": None if analysis["sequence"] is None else {
            "sequence": analysis["sequence"], **analysis["operation"],
            "entered": analysis["entered"], "never_entered": analysis["never_entered"]},
        "mismatches": analysis["mismatches"], "slowest": analysis["slowest"],
        "stragglers": None if stragglers is None else dict(
            stragglers, ranks={str(r): v for r, v in stragglers["ranks"].items()}),
        "ranks": [_rank_json(r, analysis) for r in range(analysis["world_size"])],
        "notes": notes}


def _clip(text, width):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def to_text(name, generation, analysis, notes, ops=0):
    ranks = analysis["ranks"]
    world = analysis["world_size"]
    culprits = analysis["culprits"]
    lines = [f"communicator \"{name or '?'}\", generation {generation}: {len(ranks)} of {world} "
             f"ranks dumped" + (f"; no dump from {ranks_text(analysis['missing'])}"
                                if analysis["missing"] else "")]
    shown = []
    for r in culprits:
        host = ranks[r].host if r in ranks else None
        shown.append(f"rank {r}" + (f" ({host})" if host else " (no dump)"))
    lines.append("stopped first: " + (", ".join(shown) if shown else "none"))
    lines.append(analysis["summary"])
    if analysis["sequence"] is not None:
        op = describe(analysis["operation"])
        line = (f"sequence {analysis['sequence']} ({op}): entered by "
                f"{ranks_text(analysis['entered']) if analysis['entered'] else 'no rank'}")
        if analysis["never_entered"] or analysis["missing"]:
            absent = analysis["never_entered"] + [f"{r} (no dump)" for r in analysis["missing"]]
            line += "; never entered: " + ", ".join(str(a) for a in absent)
        if analysis["slowest"] and len(analysis["entered"]) > 1:
            slow = analysis["slowest"]
            line += (f"; last to enter: rank {slow['rank']}, {slow['behind_first_ms']:.3f} ms "
                     f"after the first")
        lines.append(line)
    for mismatch in analysis["mismatches"][1:4]:
        lines.append(f"also disagree on sequence {mismatch['sequence']}: " + "; ".join(
            f"{ranks_text(g['ranks'])} ran {g['what']}" for g in mismatch["groups"]))
    stragglers = analysis["stragglers"]
    if stragglers:
        span = (f"sequences {stragglers['first_sequence']}..{stragglers['last_sequence']} "
                f"({stragglers['operations']} operations every dumped rank entered)")
        slow = stragglers["slowest"]
        if slow is not None:
            figures = stragglers["ranks"][slow]
            lines.append(f"slowest over {span}: rank {slow} entered last "
                         f"{figures['entered_last']} times, {figures['mean_lag_ms']:.3f} ms "
                         f"after the first on average (max {figures['max_lag_ms']:.3f} ms; "
                         f"the wall clocks of different hosts may differ)")
        elif stragglers["operations"] >= 5:
            lines.append(f"slowest: no rank entered last consistently over {span}")
    lines.append("")
    header = (f"{'rank':<6}{'host':<14}{'pid':<9}{'dumped on':<11}{'last seq':<10}"
              f"{'state':<9}{'last done':<11}what / error")
    lines.append(header)
    for r in range(world):
        rank = ranks.get(r)
        mark = "!" if r in culprits else " "
        if rank is None:
            reports = analysis["reported"].get(r, {})
            note = "no dump"
            if reports:
                kinds = {}
                for who, how in sorted(reports.items()):
                    kinds.setdefault(how, []).append(who)
                note += "; reported " + ", ".join(
                    f"{how} by {ranks_text(who)}" for how, who in sorted(kinds.items()))
            if analysis.get("missing_reached") is not None:
                note += (f"; the others finished sequence {analysis['missing_reached']} with "
                         f"it")
            lines.append(f"{str(r) + mark:<6}{'-':<14}{'-':<9}{'-':<11}{'-':<10}{'-':<9}"
                         f"{'-':<11}{note}")
            continue
        last = rank.last
        what = describe(last) if last else "-"
        problem = (last or {}).get("error") or rank.dump.get("error")
        if rank.pending_p2p:
            what += "; waiting in " + ", ".join(
                f"{e['op']} peer {e.get('peer')} ({e['state']})" for e in rank.pending_p2p[:3])
        if problem and last and last["state"] != "done":
            what += ": " + problem
        label = str(r) if rank.dump.get("root_rank") in (None, r) else \
            f"{r}<{rank.dump['root_rank']}"
        lines.append(f"{label + mark:<6}{_clip(rank.host, 13):<14}"
                     f"{str(rank.dump.get('pid', '-')):<9}{str(rank.dump.get('reason', '-')):<11}"
                     f"{'-' if rank.last_entered is None else rank.last_entered!s:<10}"
                     f"{last['state'] if last else '-':<9}"
                     f"{'-' if rank.last_done is None else rank.last_done!s:<11}"
                     f"{_clip(what, 130)}")
        if ops > 0:
            for entry in rank.entries[-ops:]:
                took = ""
                if entry.get("started_ns") and entry.get("finished_ns"):
                    took = f" {(entry['finished_ns'] - entry['started_ns']) / 1e6:.3f} ms"
                lines.append(f"{'':<6}seq {entry['sequence']:<8}{entry['state']:<9}"
                             f"{describe(entry)}"
                             + (f" [{entry['algorithm']}]" if entry.get("algorithm") else "")
                             + took)
    if any(rank.dump.get("root_rank") not in (None, r) for r, rank in ranks.items()):
        lines.append("(R<S: rank R of this communicator was rank S of the one it was shrunk or "
                     "split from)")
    lines.append("! = stopped first")
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="cohort-trace",
        description="Says what happened, from every rank's flight-recorder dump: where the job "
                    "stopped, which rank never entered that operation or wrote no dump, which "
                    "ranks disagreed on what, who was slowest, and where each rank stopped.")
    parser.add_argument("inputs", nargs="+", metavar="DIR|FILE",
                        help="folders of dumps (searched through) or dump files")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument("--ops", type=int, default=0, metavar="N",
                        help="also list each rank's last N operations (text output)")
    parser.add_argument("--communicator", metavar="NAME",
                        help="only this communicator's dumps (default: every one found)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.ops < 0:
        parser.error("--ops must be 0 or more")
    try:
        dumps = load(args.inputs)
        groups = group(dumps)
        if args.communicator is not None:
            groups = [g for g in groups if g[0] == args.communicator]
            if not groups:
                names = sorted({g[0] for g in group(dumps)})
                raise TraceError(f"no dump of communicator {args.communicator!r}; the dumps are "
                                 f"of {', '.join(repr(n) for n in names)}")
    except TraceError as error:
        print(f"cohort-trace: {error}", file=sys.stderr)
        return 2
    results = []
    for name, generation, members, notes in groups:
        analysis = analyze([m.data for m in members], {m.data["rank"]: m.path for m in members})
        results.append((name, generation, analysis, notes))
    try:
        if args.json:
            print(json.dumps({"kind": "trace-analysis", "format_version": 1,
                              "inputs": args.inputs,
                              "communicators": [to_json(*r) for r in results]}, indent=1))
        else:
            print("\n\n".join(to_text(*r, ops=args.ops) for r in results))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
