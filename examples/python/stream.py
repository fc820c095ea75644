"""Streams one batch of CDC entries to a lakehouse server with grpcio.

NOT RUN IN CI: PyPI is not reachable from this project's machines, so this
example is checked by hand only. examples/node/stream.js is the tested
equivalent.

Set-up (from the repository root):

    python3 -m venv .venv && . .venv/bin/activate
    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I proto --python_out=examples/python \
        --grpc_python_out=examples/python proto/lakehouse/v1/cdc.proto
    python examples/python/stream.py 127.0.0.1:50051

The generated modules keep the proto's snake_case field names; uint64 fields
are Python ints; enum values are ints (use the generated constants).
"""

import json
import queue
import sys
import time

import grpc

from lakehouse.v1 import cdc_pb2 as pb
from lakehouse.v1 import cdc_pb2_grpc as pb_grpc


def main(addr: str) -> int:
    channel = grpc.insecure_channel(addr)
    stub = pb_grpc.CDCServiceStub(channel)
    # The request stream is fed from a queue, so that the batch can be
    # numbered from the server's Connected answer; None ends it.
    requests: "queue.Queue[pb.StreamRequest | None]" = queue.Queue()
    requests.put(pb.StreamRequest(connect=pb.ConnectRequest(source_id="python-example", shard_name="py")))

    acked = persisted = False
    now = int(time.time() * 1000)
    for resp in stub.Stream(iter(requests.get, None)):
        kind = resp.WhichOneof("kind")
        print(kind, flush=True)
        if kind == "connected":
            seq = resp.connected.last_sequence + 1
            first = resp.connected.last_entry_sequence + 1
            before = json.dumps({"id": "u1", "name": "Ann"})
            after = json.dumps({"id": "u1", "name": "Anna"})
            requests.put(pb.StreamRequest(batch=pb.Batch(
                sequence_number=seq,
                correlation_id=f"b{seq}",
                entries=[
                    # before/after are JSON text, stored exactly as sent.
                    pb.Entry(sequence=first, timestamp_ms=now, operation=pb.OPERATION_INSERT,
                             table="users", row_id="u1", after=before),
                    pb.Entry(sequence=first + 1, timestamp_ms=now + 1, operation=pb.OPERATION_UPDATE,
                             table="users", row_id="u1", before=before, after=after),
                ],
            )))
            # A flush is a barrier: its status comes after this batch's ack.
            requests.put(pb.StreamRequest(flush=pb.FlushRequest()))
        elif kind == "ack":
            acked = resp.ack.status in (pb.ACK_STATUS_OK, pb.ACK_STATUS_DUPLICATE)
        elif kind == "nack":
            print(f"nack {pb.NackReason.Name(resp.nack.reason)}: {resp.nack.error_message}", file=sys.stderr)
            requests.put(None)
            return 1
        elif kind == "persisted":
            persisted = True
        elif kind == "status":
            requests.put(None)  # half-close: the server then ends the stream
            ok = acked and resp.status.last_flush.success
            if not ok:
                return 1
    return 0 if persisted else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
