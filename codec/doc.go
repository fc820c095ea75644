// Package codec implements the binary and JSON messages of the legacy
// lakehouse CDC protocol (see spec/legacy-protocol.md): cdc_batch, ack and nack
// frames, and the JSON connect, heartbeat, flush_request, cdc_batch, status and
// pong messages.
//
// Decoding a cdc_batch frame is zero-copy: DecodeBatch returns entries whose
// table, row id, before and after fields are sub-slices of the frame, so the
// frame must not be modified while the batch is in use. DecodeBatchOwned copies
// the frame once first, for callers that reuse their buffers. No decoder ever
// allocates more than the frame's own size suggests: every declared length is
// checked against the bytes present before it is used.
//
// Checksums are lenient by default, because legacy children write stale ones;
// DecodeOptions.StrictChecksum makes a mismatch an error, and
// Batch.ChecksumOK reports it either way. Frames encoded here carry a CRC-32
// computed with the checksum field zeroed.
package codec
