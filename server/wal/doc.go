// Package wal implements a durable, segmented write-ahead log with group
// commit.
//
// The CDC aggregation server appends every accepted batch (an opaque []byte,
// typically ~200 KB, at most MaxRecordBytes) to the log with AppendAsync, so
// that a stream's next batches are decoded while earlier ones wait for the
// group commit, and acknowledges each batch only once its channel reports the
// record fsync'd. Append is the blocking form of the same operation.
// When the data a record holds has been committed to Iceberg the server
// calls Release, and whole segments that contain only released records are
// deleted. After a restart, Replay hands back every record that has not been
// released yet.
//
// # Files
//
// Dir holds segment files named after the LSN of their first record, as a
// zero-padded 20-digit decimal ("00000000000000000001.wal"), so a lexical
// sort is an LSN sort. A small marker file "released" records the highest
// released LSN; it is replaced atomically (write temp, fsync, rename, fsync
// dir) so a restart never replays a record that was released, even when the
// record still sits in a partially released segment.
//
// # Record framing
//
// Each record is stored as
//
//	[u32 payload length][u32 CRC-32C][u64 LSN][payload]
//
// little-endian. The CRC (Castagnoli) covers the payload followed by the
// eight LSN bytes. Checksumming the payload first lets every appender compute
// the expensive part of the checksum in its own goroutine, in parallel, before
// the LSN is assigned; only eight bytes are folded in under the lock.
//
// # Group commit
//
// Appenders frame and checksum their record, take an LSN and enqueue it under
// a mutex. A single writer goroutine repeatedly takes the whole queue, writes
// it (small frames coalesced into one buffer, large ones written directly)
// and issues one fsync for the batch before completing every request in it.
// While the writer is inside fsync new appends accumulate, so under
// concurrency the number of fsyncs is far below the number of appends.
//
// # Recovery
//
// Open scans every segment and verifies every record (length bound, LSN
// continuity, CRC). A bad record at the end of the last segment, with nothing
// valid after it, is a torn write from a crash before fsync returned: the
// file is truncated there and a warning is logged. A bad record anywhere else,
// or one followed by a valid record, is corruption of data that may have been
// acknowledged, and Open fails with a *CorruptError wrapping ErrCorrupt rather
// than silently dropping data.
//
// # Write and fsync failures
//
// A failed write or fsync (EIO, ENOSPC, ...) fails every append of the group
// commit with an error wrapping ErrFailed, and the log refuses appends (the
// same error) until Recover succeeds; nothing of the failed group commit was
// acknowledged. Release, Replay, Stats and Close keep working meanwhile.
// Recover cuts the log back to the last acknowledged record, starts a new
// segment and proves it writable with a write+fsync probe; while the fault
// lasts it fails and may be retried (with backoff: the server does).
//
// Because of "fsyncgate" (after a failed fsync Linux may drop the dirty pages
// and let a later fsync succeed without them, and reads come from the page
// cache), Recover treats every record not covered by a successful fsync as not
// durable and cuts it off; it neither re-reads those bytes nor fsyncs the
// failed file again to save them. See Recover for the details and the reason.
// Stats reports the failure (Err, FailedAt), and counts Failures and
// Recoveries.
//
// Caveat: a crash in the middle of a multi-page group-commit write can in
// principle persist a later page but not an earlier one. That batch was never
// acknowledged, yet it is reported as corruption because it is
// indistinguishable on disk from damage to acknowledged records; an operator
// must then decide (for example by truncating the segment by hand).
package wal
