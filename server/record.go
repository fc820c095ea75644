package server

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server/wal"
)

// walRecord is what the server writes to the write-ahead log for each
// accepted batch: enough to rebuild the buffer and the sequencing state.
//
// Layout (little-endian): u8 version(1), u8 sequence mode, u16 len + source
// id, u16 len + shard name, u64 server batch sequence, u64 arrival time (ms),
// then the cdc_batch frame (entries already filtered of duplicates for
// entry-sequenced sources).
type walRecord struct {
	SourceID  string
	ShardName string
	Mode      lakehousev1.SequenceMode
	Seq       uint64
	ArrivalMs int64
	// Epoch is the source's lease epoch the batch was accepted under
	// (multi-instance mode, lease.go); 0 without coordination. Records
	// with an epoch are version 2: the same layout with a u64 epoch after
	// the arrival time.
	Epoch uint64
	Frame []byte
}

const (
	walRecordVersion      = 1
	walRecordVersionEpoch = 2
)

// maxRecordOverhead is the most a record adds to its frame: version, mode,
// two length-prefixed strings of at most 65535 bytes, two u64.
const maxRecordOverhead = 2 + 2 + 0xFFFF + 2 + 0xFFFF + 24

// Every frame the protocol allows must fit in a log record: otherwise a
// batch near the limit would pass accept and fail in the log. (This constant
// overflows, and the build fails, if it does not fit.)
const _ uint = wal.MaxRecordBytes - (codec.MaxMessageSize + maxRecordOverhead)

func (r *walRecord) appendTo(dst []byte) []byte {
	version := byte(walRecordVersion)
	if r.Epoch != 0 {
		version = walRecordVersionEpoch
	}
	dst = append(dst, version, byte(r.Mode))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.SourceID)))
	dst = append(dst, r.SourceID...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.ShardName)))
	dst = append(dst, r.ShardName...)
	dst = binary.LittleEndian.AppendUint64(dst, r.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.ArrivalMs))
	if r.Epoch != 0 {
		dst = binary.LittleEndian.AppendUint64(dst, r.Epoch)
	}
	return append(dst, r.Frame...)
}

// putTo encodes r into dst, which is exactly r.size() bytes long.
func (r *walRecord) putTo(dst []byte) {
	if out := r.appendTo(dst[:0]); len(out) != len(dst) || &out[0] != &dst[0] {
		panic(fmt.Sprintf("server: log record of %d bytes encoded in %d", len(dst), len(out))) // size() and appendTo disagree
	}
}

func (r *walRecord) size() int {
	n := 2 + 2 + len(r.SourceID) + 2 + len(r.ShardName) + 16 + len(r.Frame)
	if r.Epoch != 0 {
		n += 8
	}
	return n
}

var errBadRecord = errors.New("server: bad write-ahead log record")

// decodeWALRecord parses a record; Frame references data.
func decodeWALRecord(data []byte) (walRecord, error) {
	var r walRecord
	if len(data) < 4 || data[0] != walRecordVersion && data[0] != walRecordVersionEpoch {
		return r, fmt.Errorf("%w: header", errBadRecord)
	}
	r.Mode = lakehousev1.SequenceMode(data[1])
	off := 2
	str := func() (string, error) {
		if len(data)-off < 2 {
			return "", fmt.Errorf("%w: truncated", errBadRecord)
		}
		n := int(binary.LittleEndian.Uint16(data[off:]))
		off += 2
		if len(data)-off < n {
			return "", fmt.Errorf("%w: truncated", errBadRecord)
		}
		s := string(data[off : off+n])
		off += n
		return s, nil
	}
	var err error
	if r.SourceID, err = str(); err != nil {
		return r, err
	}
	if r.ShardName, err = str(); err != nil {
		return r, err
	}
	if len(data)-off < 16 {
		return r, fmt.Errorf("%w: truncated", errBadRecord)
	}
	r.Seq = binary.LittleEndian.Uint64(data[off:])
	r.ArrivalMs = int64(binary.LittleEndian.Uint64(data[off+8:]))
	off += 16
	if data[0] == walRecordVersionEpoch {
		if len(data)-off < 8 {
			return r, fmt.Errorf("%w: truncated", errBadRecord)
		}
		r.Epoch = binary.LittleEndian.Uint64(data[off:])
		off += 8
	}
	r.Frame = data[off:]
	return r, nil
}
