// Streams one batch of CDC entries to a lakehouse server with @grpc/grpc-js,
// asks for a flush, and prints every response as one JSON line.
//
//   npm ci && node stream.js 127.0.0.1:50051
//
// The proto-loader options are what make it work. With the defaults the
// loader renames snake_case fields to camelCase, so the server never sees
// sequence_number (every batch reads as batch 0: "out of sequence"), and it
// hides which field of a oneof is set. So:
//   keepCase: true    field names exactly as in the .proto (sequence_number)
//   longs: String     uint64/int64 as strings, no precision loss above 2^53
//   enums: String     enum values by name ("OPERATION_INSERT")
//   oneofs: true      a virtual field (here "kind") names the oneof member set
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const addr = process.argv[2] || '127.0.0.1:50051';
const protoPath = process.env.LAKEHOUSE_PROTO || path.join(__dirname, '..', '..', 'proto', 'lakehouse', 'v1', 'cdc.proto');

const definition = protoLoader.loadSync(protoPath, {
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
  defaults: true,
});
const { CDCService } = grpc.loadPackageDefinition(definition).lakehouse.v1;
const client = new CDCService(addr, grpc.credentials.createInsecure());

const source = process.env.LAKEHOUSE_SOURCE || 'node-example';
const now = Date.now();
const call = client.Stream();
let acked = false;
let persisted = false;

call.on('data', (resp) => {
  // resp.kind names the member of the response oneof that is set.
  const body = resp[resp.kind];
  console.log(JSON.stringify({ kind: resp.kind, [resp.kind]: body }));
  switch (resp.kind) {
    case 'connected':
      // Resume after the last batch the server has for this source.
      sendBatch(BigInt(body.last_sequence) + 1n, BigInt(body.last_entry_sequence) + 1n);
      break;
    case 'ack':
      acked = body.status === 'ACK_STATUS_OK' || body.status === 'ACK_STATUS_DUPLICATE';
      break;
    case 'nack':
      console.error(`nack ${body.reason}: ${body.error_message}`);
      process.exitCode = 1;
      call.end();
      break;
    case 'persisted':
      persisted = true;
      break;
    case 'status':
      // The flush's status comes after the acks of the batches before it.
      if (!acked || !body.last_flush.success) {
        process.exitCode = 1;
      }
      call.end();
      break;
  }
});
call.on('error', (err) => {
  console.error(`stream failed: ${err.code} ${err.details}`);
  process.exitCode = 1;
});
call.on('end', () => {
  if (!persisted) {
    console.error('no persisted watermark before the stream ended');
    process.exitCode = 1;
  }
  client.close();
});

call.write({ connect: { source_id: source, shard_name: 'js' } });

function sendBatch(batchSeq, firstEntry) {
  const entry = (i, operation, images) => ({
    sequence: String(firstEntry + BigInt(i)),
    timestamp_ms: String(now + i),
    operation,
    table: 'users',
    row_id: 'u1',
    ...images,
  });
  call.write({
    batch: {
      sequence_number: String(batchSeq),
      correlation_id: `b${batchSeq}`,
      entries: [
        // before/after are JSON text, stored exactly as sent.
        entry(0, 'OPERATION_INSERT', { after: JSON.stringify({ id: 'u1', name: 'Ann' }) }),
        entry(1, 'OPERATION_UPDATE', {
          before: JSON.stringify({ id: 'u1', name: 'Ann' }),
          after: JSON.stringify({ id: 'u1', name: 'Anna' }),
        }),
      ],
    },
  });
  call.write({ flush: {} });
}
