// Streams a few CDC entries to a lakehouse server over gRPC, from TypeScript.
//
// The client is generated at run time from the service contract
// (proto/lakehouse/v1/cdc.proto) by @grpc/proto-loader; no codegen step.
//
//   npm install @grpc/grpc-js @grpc/proto-loader tsx
//   npx tsx send.ts [host:port] [source-id]
//
// It connects, resumes after the server's last accepted batch, sends one
// batch of structured entries, waits for its ack, asks for a flush and
// waits until the batch is persisted (committed to Iceberg).
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as path from "node:path";

const PROTO = process.env.LAKEHOUSE_PROTO ?? path.join(__dirname, "../../../proto/lakehouse/v1/cdc.proto");
const addr = process.argv[2] ?? "127.0.0.1:50051";
const sourceId = process.argv[3] ?? "ts-example";

const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def) as any;
const client = new pkg.lakehouse.v1.CDCService(addr, grpc.credentials.createInsecure());

function main(): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = client.Stream();
    let batchSeq = 0;
    stream.on("data", (r: any) => {
      switch (r.kind) {
        case "connected": {
          // Batches are numbered per source; continue after the last one
          // the server holds (a restarted client resends from here).
          batchSeq = Number(r.connected.last_sequence) + 1;
          const now = Date.now();
          const entries = [1, 2, 3].map((i) => ({
            sequence: String((batchSeq - 1) * 3 + i), // entry sequence, increasing per source
            timestamp_ms: String(now + i),
            operation: i === 3 ? "OPERATION_UPDATE" : "OPERATION_INSERT",
            table: "users",
            row_id: `ts-${i}`,
            before: i === 3 ? JSON.stringify({ id: `ts-2`, name: "Bo" }) : "",
            after: JSON.stringify({ id: `ts-${i}`, name: ["Ann", "Bo", "Bob"][i - 1] }),
          }));
          stream.write({ batch: { sequence_number: String(batchSeq), correlation_id: `b${batchSeq}`, entries } });
          break;
        }
        case "ack":
          console.log(`ack batch ${r.ack.sequence_number}: ${r.ack.status}`);
          stream.write({ flush: {} }); // commit now instead of at the next interval
          break;
        case "nack":
          reject(new Error(`nack batch ${r.nack.sequence_number}: ${r.nack.reason} ${r.nack.error_message}`));
          stream.end();
          break;
        case "persisted":
          console.log(`persisted up to batch ${r.persisted.sequence_number}`);
          if (Number(r.persisted.sequence_number) >= batchSeq) {
            stream.end();
            resolve();
          }
          break;
      }
    });
    stream.on("error", reject);
    stream.write({ connect: { source_id: sourceId, sequence_mode: "SEQUENCE_MODE_BATCH", protocol_version: 1 } });
  });
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
