#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) from the inputs the
unit tests use: flags and scheduler environments of launcher_options_test, bench_options_test's
command lines, config_test's values, the records rendezvous_test round-trips, and store frames
as StoreClient writes them. Run it again after changing a format; the files are committed."""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):
        os.remove(os.path.join(directory, old))
    for seed in seeds:
        data = seed.encode() if isinstance(seed, str) else seed
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(directory, name), "wb") as file:
            file.write(data)


def u32(value):
    return struct.pack(">I", value)


def u64(value):
    return struct.pack(">Q", value)


def string(text):
    data = text.encode() if isinstance(text, str) else text
    return u32(len(data)) + data


def frame(body):
    return u32(len(body)) + body


# --- config: the first byte picks the variable (by registry index), the rest is the value.
config_values = ["1", "1.5", "12", "1m", "250ms", "2G", "300", "5m", "64K", "8", "soon", "true",
                 "0", "off", "WARN", "DEBUG", "auto", "-1", "9223372036854775807", "1e3", "3h",
                 "18446744073709551616", "0.5s", "1K", "4096", ""]
write("config_fuzz", [bytes([index]) + value.encode()
                      for index in range(0, 64, 3) for value in config_values[index % 7::7]])

# --- cohortrun: one argument per line, NAME=VALUE lines as the environment.
launcher = [
    "train.py",
    "--no-python\n-m\nprog\n--nnodes\nx\n-r\n9",
    "--nproc-per-node\n2\ntrain.py",
    "--nnodes\n1:3\n--nproc_per_node\n4\n--rdzv-endpoint\nnode0:29400\n--rdzv-id\njob42\nt.py",
    "--standalone\n--rdzv-endpoint\nx:1\n--rdzv-id\ny\nt.py",
    "--rdzv-backend\nstatic\n--nnodes\n2\n--node-rank\n1\nt.py",
    "--rdzv-conf\nkeep_alive_interval=2,keep_alive_max_attempt=4\nt.py",
    "--rdzv-conf\nheartbeat_interval=5,heartbeat_timeout=2,is_host=true\nt.py",
    "--redirects\n0:1,1:2\n--tee\n3\n--local-ranks-filter\n0,1\nt.py",
    "--node-label\nrack=r1\n--max-restarts\n3\n--log-dir\n/tmp/x\n--dry-run\nt.py",
    "SLURM_JOB_ID=4242\nSLURM_NNODES=3\nSLURM_NODEID=2\nSLURM_JOB_NODELIST=gpu-a[07-09],cpu1\nt.py",
    "SLURM_JOB_ID=1\nSLURM_NODELIST=node[001-004,010],x[1-2]y[3-4]\nt.py",
    "DSTACK_NODES_NUM=2\nDSTACK_NODE_RANK=1\nDSTACK_MASTER_NODE_IP=10.0.0.5\n"
    "DSTACK_GPUS_PER_NODE=8\nDSTACK_RUN_ID=run-9\nt.py",
    "OMPI_COMM_WORLD_SIZE=4\nOMPI_COMM_WORLD_RANK=3\nMASTER_ADDR=head\nMASTER_PORT=1234\nt.py",
    "PET_NNODES=1:3\nPET_NPROC_PER_NODE=5\nPET_RDZV_ENDPOINT=a:7\nPET_MAX_RESTARTS=4\n"
    "PET_STANDALONE=0\nPET_NODE_LABEL=rack=a,switch=b\nt.py",
    "node[01-03,7],gpu-a1",
]
write("launcher_options_fuzz", launcher)

# --- cohort-bench: one argument per line after the program name.
bench = [
    "allreduce\n-b\n8\n-e\n128M\n-f\n2\n-n\n7\n-w\n3\n-c\n1\n-z\n1\n-o\nsum\n-d\nfloat",
    "alltoall",
    "broadcast\n--minbytes=1K\n--maxbytes\n1M\n--stepfactor=4\n-r\n1",
    "reduce\n-d\nall\n-o\nall",
    "validate\n--expect\n2x8\n--algo\nring\n-J\nout.json",
    "allreduce\n--nranks\n4\n--algo\nlane_two_shot\n-T\n5s\n-a\n3",
    "sendrecv\n-b\n64M\n-e\n64M\n-z\n1",
    "algos", "topo", "memcpy\n-b\n1K",
    "int8,uint8,half,bfloat16", "sum,prod,max,min,avg,band", "1:1000",
]
write("bench_options_fuzz", bench)

# --- rendezvous records as the agents and the coordinator write them.
node = {"id": "vm-1234-ab", "host": "vm", "address": "10.0.0.1", "master_port": 29500,
        "local_world_size": 8, "role": "default", "node_rank": -1,
        "labels": {"rack": "r1", "switch": "s2"}}
world = {"generation": 3, "restart_count": 1, "nodes": [node, dict(node, id="b", host="w")],
         "master_addr": "10.0.0.1", "master_port": 29500, "worker_store": "10.0.0.1:29401"}
end = {"kind": "restart", "reason": "worker rank 1 on vm was killed by signal 9", "counted": True}
failure = {"host": "vm", "node_id": "vm-1", "rank": 1, "local_rank": 1, "pid": 4242,
           "exit_code": -9, "time_ms": 1700000000000, "error_file": "<N/A>",
           "message": "Signal 9 (SIGKILL)", "traceback": ""}
write("rendezvous_fuzz", [json.dumps(node), json.dumps(world), json.dumps(end),
                          json.dumps([failure, failure]),
                          "join_timeout=600,last_call_timeout=30,read_timeout=60s,is_host=0",
                          "timeout=5,keep_alive_interval=1,keep_alive_max_attempt=3"])

# --- store frames. Request: u8 op, u64 request id, the op's fields.
PING, SET, GET, WAIT, ADD, CAS, DELETE, LIST, NUMKEYS = range(1, 10)


def request(op, request_id, *fields):
    return frame(bytes([op]) + u64(request_id) + b"".join(fields))


requests = [
    request(PING, 1),
    request(SET, 2, string("key"), string("value")),
    request(GET, 3, string("key"), u64(100)),
    request(WAIT, 4, u32(2) + string("key") + string("other"), u64(0)),
    request(ADD, 5, string("counter"), u64(7)),
    request(CAS, 6, string("key"), string("value"), string("new")),
    request(DELETE, 7, string("key")),
    request(LIST, 8, string("k")),
    request(NUMKEYS, 9),
    request(GET, 10, string("missing"), u64(0xFFFFFFFFFFFFFFFF)),
]
wire = [bytes([0]), bytes([1]) + string("key") + string("value"),
        bytes([3]) + u32(2) + string("a") + string("b") + u64(5),
        bytes([7]) + u64(3) + bytes([4]) + string("timed out"),
        bytes([8]) + u64(8) + bytes([0]) + u32(1) + string("key"),
        bytes([9]) + bytes([1]) + string("job") + bytes([1]) + bytes(32),
        bytes([10]) + bytes([4]) + bytes(32) + u64(1024) + u64(65536)]
write("store_wire_fuzz", wire + [bytes([index % 11]) + r[4:] for index, r in enumerate(requests)])

# Server: byte 0 even = authenticated request stream, odd = the raw connection.
preamble = b"COHORTKV" + u32(1)
hello = frame(bytes([1]) + string("fuzz-job") + bytes([1]) + bytes(32))
server = [b"\x00" + r for r in requests]
server.append(b"\x00" + b"".join(requests))
server += [b"\x01" + preamble + hello,
           b"\x01" + preamble + hello + frame(bytes([3]) + bytes(32)),
           b"\x01" + preamble + frame(bytes([1]) + string("other-job") + bytes([0]) + bytes(32)),
           b"\x01" + b"COHORTKV" + u32(2),
           b"\x01GET / HTTP/1.1\r\n\r\n",
           b"\x01" + preamble + u32(0xFFFFFFFF)]
write("store_server_fuzz", server)
# --- transport: byte 0 bit 0 = a stranger's hello first, byte 1 = receives posted (1 p2p,
# 2 collective), byte 2 = their length / 64, then rank 1's frames (40-byte headers).
COLLECTIVE, P2P, ABORT, GOODBYE, ACK = 1, 2, 3, 4, 5


def header(kind, length, op=0, dtype=0, reduce_op=0, root=-1, tag=0, reserved=0, sequence=0,
           count=0):
    return struct.pack("<BBBBiIIQQQ", kind, op, dtype, reduce_op, root, tag, reserved, sequence,
                       count, length)


ALLREDUCE, FLOAT32 = 0, 0  # enum values as types.h numbers them (first entries)
hello = struct.pack("<IIiii", 0x43485254, 1, 1, 0, 2) + bytes(32)
transport = [
    b"\x00\x01\x01" + header(P2P, 64) + bytes(range(64)),
    b"\x00\x01\x01" + header(P2P, 32) + bytes(32),  # wrong size
    b"\x00\x00\x01" + header(P2P, 64) + bytes(64) + header(GOODBYE, 0),
    b"\x00\x02\x01" + header(COLLECTIVE, 64, op=ALLREDUCE, dtype=FLOAT32, sequence=1,
                              count=16) + bytes(64),
    b"\x00\x02\x01" + header(COLLECTIVE, 64, op=3, dtype=2, sequence=1, count=16) + bytes(64),
    b"\x00\x00\x00" + header(ABORT, 12) + b"rank 1 fails",
    b"\x00\x00\x00" + header(ABORT, 1 << 40),
    b"\x00\x01\x01" + header(P2P, (1 << 63) + 5),
    b"\x00\x01\x01" + header(P2P, (1 << 64) - 1),
    b"\x00\x00\x00" + header(ACK, 0, sequence=7),
    b"\x00\x00\x00" + header(9, 8) + bytes(8),
    b"\x00\x00\x00" + header(P2P, 300000) + bytes(4096),
    b"\x01\x01\x01" + hello + header(P2P, 64) + bytes(64),
    b"\x01\x00\x00" + b"GET / HTTP/1.1\r\n\r\n",
    b"\x01\x00\x00" + struct.pack("<IIiii", 0x43485254, 2, 1, 0, 2) + bytes(32),
]
write("transport_fuzz", transport)

print("seed corpora written under", os.path.join(HERE, "corpus"), file=sys.stderr)
