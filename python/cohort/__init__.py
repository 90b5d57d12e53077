"""cohort: a torch.distributed backend, a drop-in for gloo on CPU tensors.

``import cohort`` registers the backend ``"cohort"``; then::

    torch.distributed.init_process_group("cohort", ...)     # or new_group(..., backend="cohort")

works with every init_method torch supports (env://, tcp://, file://, or an explicit store).
CPU tensors run on libcohort (TCP, shared memory when available); CUDA tensors go to NCCL when the
extension was built with it, else they are staged through host memory. See docs/backend.md.
"""
import datetime
import os

import torch
import torch.distributed as dist

from . import _C, failures

from .failures import dump_trace, failed_ranks, root_ranks, shrink

__all__ = [
    "BACKEND", "CollectiveError", "abort", "communicator_name", "create_backend", "dump_trace",
    "failed_ranks", "is_available", "monitored_barrier", "root_ranks", "shrink", "work_exception",
]

# A collective or point-to-point operation that failed because of its peers or the
# communicator (a lost or silent rank, ranks that disagree, an abort), never because of its
# arguments: catch it to tell a peer's failure from a programming error. A RuntimeError on
# torch 1.13, torch.distributed.DistBackendError (itself a RuntimeError) on torch >= 2.1 (the
# base is chosen when the extension is compiled). Attributes: op ("allreduce", "recv", ...),
# sequence (the collective's number on its group; None for send/recv), rank (this rank), ranks
# (this rank first, then the peers involved: the one lost, waited for or disagreeing) and
# hosts (the host of each, where known).
CollectiveError = _C.CollectiveError

BACKEND = "cohort"
__version__ = "0.1.0"


def _unwrap(store):
    """The innermost store behind PrefixStores (torch wraps every group's store in one)."""
    seen = 0
    while isinstance(store, dist.PrefixStore) and seen < 64:
        inner = getattr(store, "underlying_store", None)
        if inner is None:
            break
        store = inner
        seen += 1
    return store


def _store_host(store):
    """A host the other ranks reach too: the TCPStore's, else MASTER_ADDR, else none."""
    inner = _unwrap(store)
    if isinstance(inner, dist.TCPStore):
        return inner.host
    return os.environ.get("MASTER_ADDR", "")


def _create(options, backend_options=None):
    """torch's extended creator API (1.13 and 2.x): options carry the group's store, rank,
    size, timeout and name. The name keeps communicators of different groups apart even
    where their stores' prefixes would not."""
    del backend_options  # cohort has no backend-specific options
    return create_backend(options.store, options.group_rank, options.group_size,
                          options.timeout, group_name=options.group_id)


def create_backend(store, rank, size, timeout, group_name="cohort"):
    """Creates a cohort backend object directly (torch calls this through the registry)."""
    if not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(seconds=float(timeout))
    backend = _C.create_backend(store, rank, size, timeout, _store_host(store), str(group_name))
    failures._track(backend, size)  # cohortrun --on-failure shrink: watch for its removals
    return backend


def _backend_of(group):
    group = group if group is not None else dist.distributed_c10d._get_default_group()
    if hasattr(group, "_get_backend"):  # torch 2.x: a ProcessGroup wrapping our Backend
        return group._get_backend(torch.device("cpu"))
    return group


def communicator_name(group=None):
    """Name of the libcohort communicator behind `group` (the default group when None)."""
    return _C.communicator_name(_backend_of(group))


def abort(group=None, reason="aborted by the user"):
    """Fails every pending and later operation of `group` with `reason` (from any thread)."""
    _C.abort(_backend_of(group), reason)


def work_exception(work):
    """The error a failed Work holds (a CollectiveError, or a RuntimeError), None when it
    has none.

    Same as ``work.exception()``, which torch 1.13 cannot return to Python for any backend.
    """
    return _C.work_exception(work)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """gloo's monitored barrier on a cohort group (torch's own function admits only gloo):
    rank 0 waits up to `timeout` for every rank and raises a RuntimeError naming those that
    did not arrive (all of them with wait_all_ranks, else the first)."""
    group = group if group is not None else dist.distributed_c10d._get_default_group()
    if timeout is None:
        timeout = datetime.timedelta(milliseconds=-1)  # unset: the group's timeout
    group.monitored_barrier(timeout, wait_all_ranks)


def is_available():
    return BACKEND.upper() in dist.Backend._plugins


def _register():
    if is_available():
        return  # imported twice (e.g. by two paths): torch refuses a second registration
    import inspect

    parameters = inspect.signature(dist.Backend.register_backend).parameters
    if "devices" in parameters:  # torch >= 2.1: say which devices the backend takes
        dist.Backend.register_backend(BACKEND, _create, extended_api=True,
                                      devices=["cpu", "cuda"])
    else:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True)


_register()
