"""Streams a few CDC entries to a lakehouse server over gRPC, from Python.

Generate the client from the service contract first (from the repository root):

    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I proto --python_out=docs/examples/python \
        --grpc_python_out=docs/examples/python proto/lakehouse/v1/cdc.proto
    python docs/examples/python/send.py [host:port] [source-id]

It connects, resumes after the server's last accepted batch, sends one batch
of structured entries, waits for its ack, asks for a flush and waits until the
batch is persisted (committed to Iceberg).
"""
import json
import queue
import sys
import time

import grpc

from lakehouse.v1 import cdc_pb2 as pb
from lakehouse.v1 import cdc_pb2_grpc as pb_grpc


def main(addr: str = "127.0.0.1:50051", source_id: str = "py-example") -> None:
    outbox: "queue.Queue[pb.StreamRequest | None]" = queue.Queue()

    def requests():
        while True:
            req = outbox.get()
            if req is None:
                return
            yield req

    stub = pb_grpc.CDCServiceStub(grpc.insecure_channel(addr))
    outbox.put(pb.StreamRequest(connect=pb.ConnectRequest(
        source_id=source_id, protocol_version=1, sequence_mode=pb.SEQUENCE_MODE_BATCH)))
    batch_seq = 0
    for resp in stub.Stream(requests()):
        kind = resp.WhichOneof("kind")
        if kind == "connected":
            # Batches are numbered per source; continue after the last one the
            # server holds (a restarted client resends from here).
            batch_seq = resp.connected.last_sequence + 1
            now = int(time.time() * 1000)
            entries = [
                pb.Entry(sequence=(batch_seq - 1) * 2 + 1, timestamp_ms=now, operation=pb.OPERATION_INSERT,
                         table="users", row_id="py-1", after=json.dumps({"id": "py-1", "name": "Ann"})),
                pb.Entry(sequence=(batch_seq - 1) * 2 + 2, timestamp_ms=now + 1, operation=pb.OPERATION_UPDATE,
                         table="users", row_id="py-1", before=json.dumps({"id": "py-1", "name": "Ann"}),
                         after=json.dumps({"id": "py-1", "name": "Anna"})),
            ]
            outbox.put(pb.StreamRequest(batch=pb.Batch(
                sequence_number=batch_seq, correlation_id=f"b{batch_seq}", entries=entries)))
        elif kind == "ack":
            print(f"ack batch {resp.ack.sequence_number}: {pb.AckStatus.Name(resp.ack.status)}")
            outbox.put(pb.StreamRequest(flush=pb.FlushRequest()))  # commit now, not at the next interval
        elif kind == "nack":
            outbox.put(None)
            raise SystemExit(f"nack batch {resp.nack.sequence_number}: "
                             f"{pb.NackReason.Name(resp.nack.reason)} {resp.nack.error_message}")
        elif kind == "persisted":
            print(f"persisted up to batch {resp.persisted.sequence_number}")
            if resp.persisted.sequence_number >= batch_seq:
                outbox.put(None)
                return


if __name__ == "__main__":
    main(*sys.argv[1:])
