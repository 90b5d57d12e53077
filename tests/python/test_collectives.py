"""Every collective through torch.distributed with the "cohort" backend: each op, dtype and
reduce op on 3 ranks (an odd size, so blocks split unevenly), in place and out of place, uneven
splits, tensor lists and non-contiguous tensors. Inputs are small integers, so every result is
exact and compared with what torch computes locally from all ranks' inputs."""
import pytest
import torch
import torch.distributed as dist

import harness

WORLD = 3
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
          torch.int32, torch.int64, torch.bool]
ARITHMETIC = ["SUM", "PRODUCT", "MIN", "MAX", "AVG"]
BITWISE = ["BAND", "BOR", "BXOR"]


def values(rank, count, dtype, op="SUM"):
    """Rank-dependent inputs whose reductions are exact in every dtype (products stay <= 8)."""
    base = torch.arange(count, dtype=torch.int64)
    if dtype == torch.bool:
        return (base + rank) % 3 == 0
    if op == "PRODUCT":
        return ((base + rank) % 2 + 1).to(dtype)
    return ((base * 7 + rank * 3) % 5 + 1).to(dtype)


def expected(stacked, op, dtype):
    if dtype == torch.bool:
        as_int = stacked.to(torch.int64)
        reduced = {"SUM": as_int.amax(0), "PRODUCT": as_int.amin(0), "MIN": as_int.amin(0),
                   "MAX": as_int.amax(0), "BAND": as_int.amin(0), "BOR": as_int.amax(0),
                   "BXOR": as_int.sum(0) % 2}[op]
        return reduced.to(torch.bool)
    wide = stacked.to(torch.float64 if dtype.is_floating_point else torch.int64)
    if op == "SUM":
        result = wide.sum(0)
    elif op == "PRODUCT":
        result = wide.prod(0)
    elif op == "MIN":
        result = wide.amin(0)
    elif op == "MAX":
        result = wide.amax(0)
    elif op == "AVG":
        total = stacked.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else
                           wide.dtype).sum(0)
        if dtype.is_floating_point:
            return (total.to(dtype) / stacked.shape[0]).to(dtype)
        return torch.div(total, stacked.shape[0], rounding_mode="trunc").to(dtype)
    else:
        result = wide[0]
        for row in wide[1:]:
            result = {"BAND": result & row, "BOR": result | row, "BXOR": result ^ row}[op]
    return result.to(dtype)


def ops_for(dtype):
    if dtype == torch.bool:
        return ["SUM", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"]
    if dtype.is_floating_point:
        return ARITHMETIC
    return ARITHMETIC + BITWISE


def allreduce_body(rank, world, dtype):
    failures = []
    for count in (1, 5, 4099):
        for op in ops_for(dtype):
            tensor = values(rank, count, dtype, op)
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
            stacked = torch.stack([values(r, count, dtype, op) for r in range(world)])
            want = expected(stacked, op, dtype)
            if not torch.equal(tensor, want):
                failures.append(f"{op} x{count}: got {tensor[:6].tolist()} want {want[:6].tolist()}")
    return failures


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_allreduce_every_dtype_and_op(dtype):
    results = harness.run(allreduce_body, WORLD, args=(dtype,))
    assert results == [[]] * WORLD, results


def reduce_broadcast_body(rank, world):
    failures = []
    for dtype in DTYPES:
        for root in range(world):
            op = "MAX" if dtype == torch.bool else "SUM"
            tensor = values(rank, 33, dtype)
            dist.reduce(tensor, dst=root, op=getattr(dist.ReduceOp, op))
            if rank == root:
                want = expected(torch.stack([values(r, 33, dtype) for r in range(world)]), op, dtype)
                if not torch.equal(tensor, want):
                    failures.append(f"reduce {dtype} root {root}")
            tensor = values(rank, 17, dtype)
            dist.broadcast(tensor, src=root)
            if not torch.equal(tensor, values(root, 17, dtype)):
                failures.append(f"broadcast {dtype} root {root}")
    return failures


def test_reduce_and_broadcast_every_dtype_and_root():
    assert harness.run(reduce_broadcast_body, WORLD) == [[]] * WORLD


def allgather_body(rank, world):
    failures = []
    for dtype in DTYPES + [torch.complex64, torch.int16]:
        mine = values(rank, 6, torch.int64).to(dtype)
        outputs = [torch.zeros(6, dtype=dtype) for _ in range(world)]
        dist.all_gather(outputs, mine)
        if not all(torch.equal(outputs[r], values(r, 6, torch.int64).to(dtype)) for r in range(world)):
            failures.append(f"all_gather {dtype}")
        flat = torch.zeros(6 * world, dtype=dtype)
        dist.all_gather_into_tensor(flat, mine)
        want = torch.cat([values(r, 6, torch.int64).to(dtype) for r in range(world)])
        if not torch.equal(flat, want):
            failures.append(f"all_gather_into_tensor {dtype}")
    # Uneven: rank r contributes r + 1 elements.
    mine = torch.full((rank + 1,), float(rank))
    outputs = [torch.zeros(r + 1) for r in range(world)]
    dist.all_gather(outputs, mine)
    if not all(torch.equal(outputs[r], torch.full((r + 1,), float(r))) for r in range(world)):
        failures.append(f"uneven all_gather: {outputs}")
    # In place: the input is this rank's block of the output.
    flat = torch.zeros(4 * world)
    block = flat[rank * 4:(rank + 1) * 4]
    block.fill_(rank + 1)
    dist.all_gather_into_tensor(flat, block)
    if not torch.equal(flat, torch.arange(1, world + 1, dtype=torch.float32).repeat_interleave(4)):
        failures.append(f"in-place all_gather_into_tensor: {flat}")
    # Coalesced: two tensors of different shapes per rank.
    inputs = [torch.full((2,), float(rank)), torch.full((3, 2), float(rank) + 0.5)]
    output_lists = [[torch.zeros(2), torch.zeros(3, 2)] for _ in range(world)]
    dist.all_gather_coalesced(output_lists, inputs)
    for r in range(world):
        if not (torch.equal(output_lists[r][0], torch.full((2,), float(r))) and
                torch.equal(output_lists[r][1], torch.full((3, 2), float(r) + 0.5))):
            failures.append(f"all_gather_coalesced from rank {r}: {output_lists[r]}")
    return failures


def test_allgather_variants():
    assert harness.run(allgather_body, WORLD) == [[]] * WORLD


def reduce_scatter_body(rank, world):
    failures = []
    for dtype in DTYPES:
        op = dist.ReduceOp.MAX if dtype == torch.bool else dist.ReduceOp.SUM
        name = "MAX" if dtype == torch.bool else "SUM"
        full = values(rank, 4 * world, dtype)
        output = torch.zeros(4, dtype=dtype)
        dist.reduce_scatter_tensor(output, full, op=op)
        want = expected(torch.stack([values(r, 4 * world, dtype) for r in range(world)]), name, dtype)
        if not torch.equal(output, want[rank * 4:(rank + 1) * 4]):
            failures.append(f"reduce_scatter_tensor {dtype}")
        inputs = list(values(rank, 4 * world, dtype).chunk(world))
        inputs = [chunk.clone() for chunk in inputs]
        output = torch.zeros(4, dtype=dtype)
        dist.reduce_scatter(output, inputs, op=op)
        if not torch.equal(output, want[rank * 4:(rank + 1) * 4]):
            failures.append(f"reduce_scatter {dtype}")
    # Uneven blocks: block r has r + 2 elements.
    inputs = [torch.full((r + 2,), float(rank + 1)) for r in range(world)]
    output = torch.zeros(rank + 2)
    dist.reduce_scatter(output, inputs)
    if not torch.equal(output, torch.full((rank + 2,), float(sum(range(1, world + 1))))):
        failures.append(f"uneven reduce_scatter: {output}")
    for op_name in ("AVG", "MIN", "PRODUCT"):
        full = values(rank, 2 * world, torch.float32, op_name)
        output = torch.zeros(2)
        dist.reduce_scatter_tensor(output, full, op=getattr(dist.ReduceOp, op_name))
        stacked = torch.stack([values(r, 2 * world, torch.float32, op_name) for r in range(world)])
        if not torch.allclose(output, expected(stacked, op_name, torch.float32)[rank * 2:rank * 2 + 2]):
            failures.append(f"reduce_scatter_tensor {op_name}")
    return failures


def test_reduce_scatter_variants():
    assert harness.run(reduce_scatter_body, WORLD) == [[]] * WORLD


def alltoall_body(rank, world):
    failures = []
    for dtype in DTYPES + [torch.int16]:
        source = (torch.arange(world * 2) + 100 * rank).to(dtype)
        output = torch.zeros(world * 2, dtype=dtype)
        dist.all_to_all_single(output, source)
        want = torch.cat([(torch.arange(rank * 2, rank * 2 + 2) + 100 * r).to(dtype)
                          for r in range(world)])
        if not torch.equal(output, want):
            failures.append(f"all_to_all_single {dtype}: {output} != {want}")
    # Uneven splits: rank r sends (r + p + 1) rows of 2 to rank p.
    send = [r_p + 1 + rank for r_p in range(world)]
    recv = [rank + 1 + r for r in range(world)]
    source = torch.cat([torch.full((n, 2), float(rank * 10 + p)) for p, n in enumerate(send)])
    output = torch.zeros(sum(recv), 2)
    dist.all_to_all_single(output, source, output_split_sizes=recv, input_split_sizes=send)
    want = torch.cat([torch.full((n, 2), float(r * 10 + rank)) for r, n in enumerate(recv)])
    if not torch.equal(output, want):
        failures.append(f"all_to_all_single with splits: {output.tolist()}")
    # Tensor lists of different sizes per peer.
    inputs = [torch.full((p + 1,), rank * 10 + p, dtype=torch.int64) for p in range(world)]
    outputs = [torch.zeros(rank + 1, dtype=torch.int64) for _ in range(world)]
    dist.all_to_all(outputs, inputs)
    for r in range(world):
        if not torch.equal(outputs[r], torch.full((rank + 1,), r * 10 + rank, dtype=torch.int64)):
            failures.append(f"all_to_all from {r}: {outputs[r]}")
    return failures


def test_alltoall_variants():
    assert harness.run(alltoall_body, WORLD) == [[]] * WORLD


def gather_scatter_body(rank, world):
    failures = []
    for dtype in (torch.float32, torch.int64, torch.bool, torch.bfloat16):
        for root in range(world):
            mine = values(rank, 5, dtype)
            gathered = [torch.zeros(5, dtype=dtype) for _ in range(world)] if rank == root else None
            dist.gather(mine, gathered, dst=root)
            if rank == root and not all(torch.equal(gathered[r], values(r, 5, dtype))
                                        for r in range(world)):
                failures.append(f"gather {dtype} root {root}")
            pieces = [values(r + 7, 4, dtype) for r in range(world)] if rank == root else None
            output = torch.zeros(4, dtype=dtype)
            dist.scatter(output, pieces, src=root)
            if not torch.equal(output, values(rank + 7, 4, dtype)):
                failures.append(f"scatter {dtype} root {root}")
    return failures


def test_gather_and_scatter():
    assert harness.run(gather_scatter_body, WORLD) == [[]] * WORLD


def noncontiguous_body(rank, world):
    failures = []
    # A transposed view: allreduce, broadcast and allgather must write through the view.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) + rank
    view = base.t()
    assert not view.is_contiguous()
    dist.all_reduce(view)
    want = sum(torch.arange(12, dtype=torch.float32).reshape(3, 4) + r for r in range(world))
    if not torch.equal(base, want):
        failures.append(f"allreduce through a view: {base}")
    strided = torch.zeros(10)[::2]
    if rank == 1:
        strided.copy_(torch.arange(5, dtype=torch.float32))
    dist.broadcast(strided, src=1)
    if not torch.equal(strided, torch.arange(5, dtype=torch.float32)):
        failures.append(f"broadcast into a strided view: {strided}")
    outputs = [torch.zeros(4, 2).t() for _ in range(world)]
    dist.all_gather(outputs, (torch.arange(8.) + rank).reshape(4, 2).t())
    for r in range(world):
        if not torch.equal(outputs[r], (torch.arange(8.) + r).reshape(4, 2).t()):
            failures.append(f"allgather into views from {r}")
    # Coalesced allreduce over tensors in different storages.
    tensors = [torch.full((3,), float(rank)), torch.full((2, 2), float(rank * 2))]
    dist.all_reduce_coalesced(tensors)
    total = sum(range(world))
    if not (torch.equal(tensors[0], torch.full((3,), float(total))) and
            torch.equal(tensors[1], torch.full((2, 2), float(2 * total)))):
        failures.append(f"all_reduce_coalesced: {tensors}")
    # Complex tensors sum as pairs of reals.
    z = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64) * (rank + 1)
    dist.all_reduce(z)
    if not torch.equal(z, torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64) * 6):
        failures.append(f"complex sum: {z}")
    # Tensors that require grad are written as plain data (gloo does the same), views included.
    weight = torch.full((3, 4), float(rank), requires_grad=True)
    dist.all_reduce(weight.t())
    if not torch.equal(weight.detach(), torch.full((3, 4), float(total))):
        failures.append(f"allreduce into a view of a leaf that requires grad: {weight}")
    # Empty tensors are legal and move nothing.
    empty = torch.zeros(0)
    dist.all_reduce(empty)
    dist.broadcast(empty, src=0)
    return failures


def test_noncontiguous_coalesced_complex_and_empty():
    assert harness.run(noncontiguous_body, WORLD) == [[]] * WORLD


def p2p_body(rank, world):
    failures = []
    if rank == 0:
        dist.send(torch.arange(6, dtype=torch.int32), dst=1, tag=3)
        dist.send(torch.arange(4, dtype=torch.float64) * 2, dst=2)
        # Receive from any source: both others send once; the returned rank says who.
        senders = set()
        for _ in range(world - 1):
            buffer = torch.zeros(2, dtype=torch.int64)
            source = dist.recv(buffer)
            if not torch.equal(buffer, torch.full((2,), source, dtype=torch.int64)):
                failures.append(f"recv from any: {buffer} claims source {source}")
            senders.add(source)
        if senders != {1, 2}:
            failures.append(f"recv from any source saw {senders}")
    else:
        buffer = torch.zeros(6, dtype=torch.int32) if rank == 1 else torch.zeros(4, dtype=torch.float64)
        dist.recv(buffer, src=0, tag=3 if rank == 1 else 0)
        want = torch.arange(6, dtype=torch.int32) if rank == 1 else torch.arange(4, dtype=torch.float64) * 2
        if not torch.equal(buffer, want):
            failures.append(f"recv: {buffer}")
        dist.send(torch.full((2,), rank, dtype=torch.int64), dst=0)
    # isend/irecv in a ring, both posted before either is waited on (1 MiB: above eager).
    # Tags of their own: a message of the ring must never match rank 0's receives from any
    # source above (tag 0), which may still be pending when a fast rank gets here.
    right, left = (rank + 1) % world, (rank - 1) % world
    outgoing = torch.full((1 << 18,), float(rank))
    incoming = torch.zeros(1 << 18)
    requests = [dist.isend(outgoing, right, tag=11), dist.irecv(incoming, left, tag=11)]
    for request in requests:
        request.wait()
    if not torch.equal(incoming, torch.full((1 << 18,), float(left))):
        failures.append("isend/irecv ring")
    ops = [dist.P2POp(dist.isend, outgoing, right, tag=12),
           dist.P2POp(dist.irecv, incoming, left, tag=12)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    dist.barrier()
    return failures


def test_send_recv_any_source_and_batch():
    assert harness.run(p2p_body, WORLD) == [[]] * WORLD


def test_two_ranks_large_allreduce():
    def body(rank, world):
        tensor = torch.full((1 << 22,), float(rank + 1))  # 16 MiB: pipelined, segmented
        dist.all_reduce(tensor)
        return bool(torch.all(tensor == 3.0))
    assert harness.run(body, 2) == [True, True]
