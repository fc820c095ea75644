package iceberg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Mirror change files (Config.ElectedCommitter with Config.Mirror): a
// stager hands its folded mirror changes of one table (a mirrorPart)
// to the elected committer as a Parquet file of (row_id, source_id,
// entry_seq, event_ms, op, after) under the changelog table's
// data/mirror-changes/, and records its path and SHA-256 in the part's row
// of PartsTable. Nothing references it from Iceberg metadata: it is
// deleted once the committer has applied it (or its part was fenced or
// abandoned), and orphan cleanup keeps a file that a part still waits on
// (isPendingChangeFile).

// mirrorChangesDir is the change files' directory under a changelog
// table's location (inside data/, as tombstoneDir says why).
const mirrorChangesDir = "data/mirror-changes"

var mirrorChangesSchema = arrow.NewSchema([]arrow.Field{
	{Name: "row_id", Type: arrow.BinaryTypes.String},
	{Name: "source_id", Type: arrow.BinaryTypes.String},
	{Name: "entry_seq", Type: arrow.PrimitiveTypes.Int64},
	{Name: "event_ms", Type: arrow.PrimitiveTypes.Int64},
	{Name: "op", Type: arrow.PrimitiveTypes.Int32},
	{Name: "after", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// changeFile is a written change file.
type changeFile struct {
	path   string
	sha256 string // hex, of the whole file
}

// writeMirrorChanges writes mp's changes as a new change file under tbl
// (the changelog table).
func writeMirrorChanges(ctx context.Context, tbl *table.Table, mp *mirrorPart) (changeFile, error) {
	cf := changeFile{path: strings.TrimSuffix(tbl.Location(), "/") + "/" + mirrorChangesDir + "/" + uuid.NewString() + ".parquet"}
	data, err := encodeMirrorChanges(mp)
	if err != nil {
		return cf, err
	}
	sum := sha256.Sum256(data)
	cf.sha256 = hex.EncodeToString(sum[:])
	fs, err := tbl.FS(ctx)
	if err != nil {
		return cf, err
	}
	if err := writeSideFile(fs, cf.path, data); err != nil {
		return cf, fmt.Errorf("write mirror change file: %w", err)
	}
	return cf, nil
}

// encodeMirrorChanges is the Parquet file of mp's changes. zstd frames
// carry a checksum of their content; the SHA-256 in the part's row covers
// the whole file (a truncated or replaced one).
func encodeMirrorChanges(mp *mirrorPart) ([]byte, error) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, mirrorChangesSchema)
	defer b.Release()
	for i := range mp.len() {
		ch := mp.change(i)
		b.Field(0).(*array.StringBuilder).Append(ch.key)
		b.Field(1).(*array.StringBuilder).Append(ch.source)
		b.Field(2).(*array.Int64Builder).Append(int64(ch.entry))
		b.Field(3).(*array.Int64Builder).Append(int64(ch.eventMs))
		b.Field(4).(*array.Int32Builder).Append(int32(ch.op))
		if ch.op == codec.OpDelete {
			b.Field(5).AppendNull()
		} else {
			b.Field(5).(*array.StringBuilder).Append(ch.after)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	data, err := encodeSideFile(rec)
	if err != nil {
		return nil, fmt.Errorf("mirror change file: %w", err)
	}
	return data, nil
}

// readMirrorChanges reads a change file back into mp's changes, checking its
// SHA-256 first.
func readMirrorChanges(fs icebergio.IO, cf changeFile, mp *mirrorPart) error {
	data, err := readWholeFile(fs, cf.path)
	if err != nil {
		return fmt.Errorf("mirror change file %s: %w", cf.path, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != cf.sha256 {
		return fmt.Errorf("mirror change file %s: SHA-256 %x, the part recorded %s", cf.path, sum, cf.sha256)
	}
	if err := decodeMirrorChanges(data, mp); err != nil {
		return fmt.Errorf("mirror change file %s: %w", cf.path, err)
	}
	return nil
}

func readWholeFile(fs icebergio.IO, path string) ([]byte, error) {
	if rf, ok := fs.(icebergio.ReadFileIO); ok {
		return rf.ReadFile(path)
	}
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeMirrorChanges builds mp's changes from a change file's data
// directly in the part's compact form (mirror.go): the keys and `after`
// texts appended to one string each, per file, not per row.
func decodeMirrorChanges(data []byte, mp *mirrorPart) error {
	var pb partBuilder
	err := readSideFile(context.Background(), bytes.NewReader(data), func(rec arrow.RecordBatch) error {
		keys, ok1 := rec.Column(0).(*array.String)
		srcs, ok2 := rec.Column(1).(*array.String)
		seqs, ok3 := rec.Column(2).(*array.Int64)
		ms, ok4 := rec.Column(3).(*array.Int64)
		ops, ok5 := rec.Column(4).(*array.Int32)
		afters, ok6 := rec.Column(5).(*array.String)
		if rec.NumCols() != 6 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
			return errors.New("unexpected columns")
		}
		pb.grow(keys.Len(), len(keys.ValueBytes()), len(afters.ValueBytes()))
		for i := range keys.Len() {
			op := codec.Op(ops.Value(i))
			if ops.Value(i) < 0 || op > codec.OpDelete {
				return fmt.Errorf("row %q: unknown op %d", keys.Value(i), ops.Value(i))
			}
			ch := mirrorChange{key: keys.Value(i), source: srcs.Value(i), entry: uint64(seqs.Value(i)),
				eventMs: uint64(ms.Value(i)), op: op}
			switch {
			case op == codec.OpDelete:
			case afters.IsNull(i):
				return fmt.Errorf("row %q: %v without after", ch.key, op)
			default:
				ch.after = afters.Value(i)
			}
			pb.add(ch)
		}
		return nil
	})
	if err != nil {
		return err
	}
	pb.finish(mp)
	return nil
}

// partBuilder builds a mirrorPart's changes one by one, copying their
// strings into the part's own.
type partBuilder struct {
	keys, afters strings.Builder
	changes      []stagedChange
	sources      sourceIndex
}

// grow makes room for n more changes of keyBytes and afterBytes.
func (b *partBuilder) grow(n, keyBytes, afterBytes int) {
	b.changes = slices.Grow(b.changes, n)
	b.keys.Grow(keyBytes)
	b.afters.Grow(afterBytes)
}

func (b *partBuilder) add(ch mirrorChange) {
	sc := stagedChange{keyOff: b.keys.Len(), keyLen: uint32(len(ch.key)), source: b.sources.index(ch.source),
		entry: ch.entry, eventMs: ch.eventMs, op: ch.op}
	b.keys.WriteString(ch.key)
	if ch.op != codec.OpDelete {
		sc.afterOff, sc.afterLen = b.afters.Len(), uint32(len(ch.after))
		b.afters.WriteString(ch.after)
	}
	b.changes = append(b.changes, sc)
}

// finish sets mp's changes to the ones added.
func (b *partBuilder) finish(mp *mirrorPart) {
	mp.changes, mp.keys, mp.afters, mp.sources = b.changes, b.keys.String(), b.afters.String(), b.sources.list
}

// isChangeFilePath reports whether path is under a table's change files'
// directory.
func isChangeFilePath(path string) bool {
	return strings.Contains(path, "/"+mirrorChangesDir+"/")
}

// isPendingChangeFile reports whether path is a change file that a part
// still waits on (staged, or committed with its mirror pending), which
// orphan cleanup must keep: it is in no Iceberg metadata, and the part's
// stager may be another instance. Any instance (or lakehouse maintain) on
// a PostgreSQL catalog checks the parts table; a failed check keeps the
// file.
func (s *Sink) isPendingChangeFile(ctx context.Context, path string) bool {
	if !isChangeFilePath(path) {
		return false
	}
	oc, ok := s.cat.(*ownedDBCatalog)
	if !ok || !isPostgresDSN(s.cfg.CatalogURI) {
		return false // no parts table: no elected committer
	}
	// By file name (a UUID): listings spell the scheme and authority
	// differently.
	base := path[strings.LastIndex(path, "/")+1:]
	var pending bool
	err := oc.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+PartsTable+`
		WHERE right(mirror_file, $2) = $1 AND (state = 'staged' OR `+mirrorPendingSQL+`))`, "/"+base, len(base)+1).Scan(&pending)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table: no committer ever ran
		return false
	case err != nil:
		s.log.Warn("orphan cleanup: could not tell whether a mirror change file is pending; kept", "path", path, "err", err)
		return true
	}
	return pending
}
