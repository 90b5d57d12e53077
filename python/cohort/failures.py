"""Surviving failures in place: a training loop that catches a collective's error, calls
``cohort.shrink()`` and goes on with the survivors, without restarting any process.

    try:
        loss = step(ddp, batch)                       # all_reduce inside fails: a peer died
    except RuntimeError:
        cohort.shrink()                               # the default group is now the survivors
        ddp = DDP(ddp.module)                         # re-wrap: same parameters, new group
        # optimizer, parameters and their state are untouched; reshard the data with the new
        # dist.get_rank() / dist.get_world_size()

Under ``cohortrun --on-failure shrink`` a watch thread also waits for the launcher's removals
(a lost node, a worker that died): the pending operations that involve a removed rank fail at
once, naming it (a peer whose traffic vanished sends no FIN), instead of at the timeout. See
docs/failures.md.
"""
import atexit
import os
import threading
import weakref

import torch
import torch.distributed as dist

from . import _C

_tracked = weakref.WeakSet()  # cohort backends of the job's world (their root ranks are RANKs)
_watch_thread = None
_watch_lock = threading.Lock()
_watch_stop = threading.Event()


def _c10d():
    return dist.distributed_c10d


def _default():
    return _c10d()._get_default_group()


def _backend_of(group):
    group = group if group is not None else _default()
    if hasattr(group, "_get_backend"):  # torch 2.x: a ProcessGroup wrapping our Backend
        return group._get_backend(torch.device("cpu"))
    return group


def _as_process_group(backend, store, rank, size):
    """torch 1.x: the backend is the ProcessGroup. torch 2.x: wrap it in one."""
    if isinstance(backend, dist.ProcessGroup) and not hasattr(dist.ProcessGroup, "_register_backend"):
        return backend
    group = dist.ProcessGroup(store, rank, size)
    device = torch.device("cpu")
    backend_type = dist.ProcessGroup.BackendType.CUSTOM
    group._set_default_backend(backend_type)
    group._register_backend(device, backend_type, backend)
    if torch.cuda.is_available():
        group._register_backend(torch.device("cuda"), backend_type, backend)
    return group


def _tables():
    """torch's registries of groups: module globals (1.x) or the _world object (2.x)."""
    c10d = _c10d()
    world = getattr(c10d, "_world", None)
    if world is not None and hasattr(world, "pg_map"):
        return world.pg_map, world.pg_names, world.pg_group_ranks
    return c10d._pg_map, c10d._pg_names, c10d._pg_group_ranks


def shrink(group=None, exclude=()):
    """Shrinks `group` (the default group when None) to its survivors and returns the new group.

    Every surviving rank calls it after an operation of the group failed (or to leave out the
    ranks in `exclude`, given by their rank in `group`). The survivors agree on who failed,
    through cohortrun's worker store when the job runs under cohortrun (else the group's store),
    and the new group reuses their connections. Ranks are dense again, in the old order; for
    the default group, torch.distributed's world becomes the survivors (dist.get_rank(),
    dist.get_world_size() and every call without a group use it). The old group is revoked.
    A rank that the others left out gets a RuntimeError.
    """
    old = group if group is not None else _default()
    was_default = group is None or group is _default()
    backend = _backend_of(old)
    new_backend, roots = _C.shrink(backend, [int(r) for r in exclude])
    pg_map, pg_names, pg_group_ranks = _tables()
    entry = pg_map.get(old)
    store = entry[1] if isinstance(entry, tuple) and len(entry) > 1 else None
    new_group = _as_process_group(new_backend, store, new_backend.rank(), new_backend.size())
    if backend in _tracked:
        _tracked.add(new_backend)
    name = pg_names.get(old, "cohort")
    pg_map[new_group] = entry if isinstance(entry, dict) else ("cohort", store)
    pg_names[new_group] = f"{name}/shrink"
    if was_default:
        pg_group_ranks[new_group] = {r: r for r in range(new_backend.size())}
        _c10d()._update_default_pg(new_group)
    else:
        old_ranks = pg_group_ranks.get(old, {})
        by_group_rank = {g: r for r, g in old_ranks.items()}
        pg_group_ranks[new_group] = {by_group_rank.get(root, root): new
                                     for new, root in enumerate(roots)}
    for table in (pg_map, pg_names, pg_group_ranks):
        table.pop(old, None)
    return new_group


def failed_ranks(group=None):
    """[(rank, how)] for each rank of `group` this rank knows has failed: how is "lost" (its
    connection closed), "stopped", "timeout" or "removed" (by the launcher)."""
    return _C.failed_ranks(_backend_of(group))


def root_ranks(group=None):
    """The rank each rank of `group` had before any shrink (for the default group of a
    cohortrun or torchrun job: its RANK)."""
    return _C.root_ranks(_backend_of(group))


def dump_trace(group=None, directory=None):
    """Writes the flight recorder of `group` (its last operations, their state and times) as
    JSON to `directory` (default: COHORT_TRACE_DIR, which cohortrun sets to its log folder, else
    the working folder) and returns the path. `cohort-trace DIR` reads a folder of them."""
    return _C.dump_trace(_backend_of(group), directory or "")


def _watch():
    number = 1
    while not _watch_stop.is_set():
        removal = _C.wait_removal(number, 1.0)
        if removal is None:
            continue
        number += 1
        ranks, reason = removal
        for backend in list(_tracked):
            try:
                _C.remove_root_ranks(backend, list(ranks), f"cohortrun removed rank(s) "
                                     f"{', '.join(map(str, ranks))} from the job: {reason}")
            except Exception:  # a group shut down meanwhile
                pass


def _stop_watch():
    """At exit, while threads still run: the watch must not be inside the extension (the GIL
    released) when the interpreter finalizes, or the process aborts."""
    _watch_stop.set()
    _C.stop_watch()
    if _watch_thread is not None:
        _watch_thread.join(timeout=5)


def _track(backend, size):
    """Called for each backend the creator makes: the job's world groups are watched."""
    global _watch_thread
    if os.environ.get("COHORT_ON_FAILURE") != "shrink" or not os.environ.get("COHORT_STORE_ADDR"):
        return
    if str(size) != os.environ.get("WORLD_SIZE"):
        return
    _tracked.add(backend)
    with _watch_lock:
        if _watch_thread is None:
            _watch_thread = threading.Thread(target=_watch, name="cohort-membership", daemon=True)
            _watch_thread.start()
            atexit.register(_stop_watch)
