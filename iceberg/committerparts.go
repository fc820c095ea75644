package iceberg

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// Published parts (docs/scale-out.md, "One snapshot per table per
// interval"): with Config.ElectedCommitter, a staged part (one flush's data
// files for one table) is published as a row of PartsTable in the catalog's
// PostgreSQL database, with what the committer needs to add it: its data
// files' Iceberg fields, its per-source batch spans and the fencing claims
// its batches were accepted under. The elected committer of the table
// changes its state from staged to committed in the same PostgreSQL
// transaction as the catalog's commit (fence.go), or to fenced when its
// claims no longer hold. With the mirror, a part also names its change
// file (mirrorchanges.go): a committed part's mirror is pending until the
// committer's mirror commit sets mirror_applied, in that commit's catalog
// transaction (committermirror.go).

// PartsTable is the table of published parts.
const PartsTable = "lakehouse_staged_parts"

// Part states.
const (
	partStaged    = "staged"
	partCommitted = "committed"
	partFenced    = "fenced"
	// partAbandoned: the instance that published it restarted; its
	// write-ahead log stages the same batches again.
	partAbandoned = "abandoned"
)

// mirrorPendingSQL selects the parts whose changelog is committed and
// whose mirror changes are not applied yet.
const mirrorPendingSQL = `state = 'committed' AND mirror_file IS NOT NULL AND NOT mirror_applied`

// partsKeep is how long finished parts' rows are kept (a waiting stager
// reads its parts' state within a poll interval of the change).
const partsKeep = 10 * time.Minute

// partPoll is how often a stager reads the state of the parts it waits for.
const partPoll = 150 * time.Millisecond

// partsLockKey serialises the creation of PartsTable by starting instances
// (concurrent CREATE TABLE IF NOT EXISTS can fail).
const partsLockKey = 746164

func (s *Sink) createPartsTable(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("iceberg: create parts table: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, q := range []string{
		`SELECT pg_advisory_xact_lock(` + strconv.Itoa(partsLockKey) + `)`,
		`CREATE TABLE IF NOT EXISTS ` + PartsTable + ` (
			id bigserial PRIMARY KEY,
			namespace text NOT NULL,
			table_name text NOT NULL,
			owner text NOT NULL,
			data_files jsonb NOT NULL,
			spans jsonb NOT NULL,
			claims jsonb NOT NULL,
			rows bigint NOT NULL,
			bytes bigint NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now(),
			state text NOT NULL DEFAULT 'staged',
			rows_written bigint,
			snapshot_id bigint,
			finished_at timestamptz,
			urgent boolean NOT NULL DEFAULT false)`,
		// Parts tables created before urgent parts existed.
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS urgent boolean NOT NULL DEFAULT false`,
		// Parts tables created before mirror parts existed.
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_file text`,
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_sha256 text`,
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_spans jsonb`,
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_rows bigint NOT NULL DEFAULT 0`,
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_applied boolean NOT NULL DEFAULT false`,
		`ALTER TABLE ` + PartsTable + ` ADD COLUMN IF NOT EXISTS mirror_snapshot_id bigint`,
		`CREATE INDEX IF NOT EXISTS ` + PartsTable + `_staged ON ` + PartsTable + ` (namespace, table_name) WHERE state = 'staged'`,
		`CREATE INDEX IF NOT EXISTS ` + PartsTable + `_mirror_pending ON ` + PartsTable + ` (namespace, table_name) WHERE ` + mirrorPendingSQL,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("iceberg: create parts table: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("iceberg: create parts table: %w", err)
	}
	return nil
}

// abandonParts marks this instance's parts still staged as abandoned: they
// were published by a run of this instance that ended, and its write-ahead
// log stages their batches again. Run at Open, before anything is staged: a
// committer that committed one first made the table's watermarks cover it
// (the row lock orders the two), so staging drops those rows.
//
// A part committed before the restart whose mirror is still pending stays
// pending: the committer applies it. An abandoned part's change file is
// deleted (it is never applied).
func (s *Sink) abandonParts(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `UPDATE `+PartsTable+` SET state = $3, finished_at = now()
		WHERE namespace = $1 AND owner = $2 AND state = 'staged' RETURNING table_name, COALESCE(mirror_file, '')`,
		s.cfg.Namespace, s.cfg.InstanceID, partAbandoned)
	if err != nil {
		return fmt.Errorf("iceberg: abandon parts of a previous run: %w", err)
	}
	defer rows.Close()
	n := 0
	files := make(map[string][]string) // table -> change files
	for rows.Next() {
		var name, path string
		if err := rows.Scan(&name, &path); err != nil {
			return fmt.Errorf("iceberg: abandon parts of a previous run: %w", err)
		}
		n++
		if path != "" {
			files[name] = append(files[name], path)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("iceberg: abandon parts of a previous run: %w", err)
	}
	if n > 0 {
		s.log.Info("parts published by a previous run abandoned; the write-ahead log stages them again", "parts", n)
	}
	for name, paths := range files {
		s.removeChangeFiles(ctx, name, paths)
	}
	return nil
}

// removeChangeFiles deletes change files of CDC table name that no part
// will apply (best effort: orphan cleanup removes what is left).
func (s *Sink) removeChangeFiles(ctx context.Context, name string, paths []string) {
	if len(paths) == 0 {
		return
	}
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		s.log.Debug("could not remove mirror change files", "table", name, "err", err)
		return
	}
	s.removePaths(ctx, tbl, paths...)
}

// spanJSON is a published part's span of one source.
type spanJSON struct {
	Min   uint64 `json:"min"`
	Max   uint64 `json:"max"`
	Entry uint64 `json:"entry"`
}

// publishParts inserts the parts not yet published (a retried CommitStaged
// hands the same parts again) and records their ids, in one transaction: a
// committer round sees all of a flush's parts or none of them, so it orders
// the tables as a direct commit does (smallest first) and never commits the
// first tables of a flush alone, and a failed insert publishes nothing.
func (s *Sink) publishParts(ctx context.Context, db *sql.DB, parts []*stagedTable, claims map[string][]uint64, urgent bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("iceberg: publish parts: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	ids := make([]int64, len(parts))
	for i, p := range parts {
		if p.partID != 0 {
			continue
		}
		files, err := encodeDataFiles(p.files)
		if err != nil {
			return fmt.Errorf("iceberg: publish part of table %q: %w", p.name, err)
		}
		spans := make(map[string]spanJSON, len(p.spans))
		var cl []fence.Claim
		for src, sp := range p.spans {
			spans[src] = spanJSON{Min: sp.minBatch, Max: sp.maxBatch, Entry: sp.maxEntry}
			for _, e := range claims[src] {
				cl = append(cl, fence.Claim{Source: src, Epoch: e})
			}
		}
		var (
			mfile, msum, mspans sql.NullString
			mrows               int64
		)
		if p.mirror != nil {
			// The mirror's spans can differ from the changelog's (its
			// watermarks can lag the changelog's: see prepare).
			ms := make(map[string]spanJSON, len(p.mirror.spans))
			// No claims for the mirror's spans: rows below the changelog's
			// spans are in the changelog already, and applying their
			// changes is right whoever owns the source now.
			for src, sp := range p.mirror.spans {
				ms[src] = spanJSON{Min: sp.minBatch, Max: sp.maxBatch, Entry: sp.maxEntry}
			}
			j, _ := json.Marshal(ms) // cannot fail
			mfile = sql.NullString{String: p.mirrorFile.path, Valid: true}
			msum = sql.NullString{String: p.mirrorFile.sha256, Valid: true}
			mspans = sql.NullString{String: string(j), Valid: true}
			mrows = p.mirror.rows
		}
		slices.SortFunc(cl, func(a, b fence.Claim) int {
			return cmp.Or(strings.Compare(a.Source, b.Source), cmp.Compare(a.Epoch, b.Epoch))
		})
		sj, _ := json.Marshal(spans) // cannot fail
		cj, _ := json.Marshal(cl)    // cannot fail
		err = tx.QueryRowContext(ctx, `INSERT INTO `+PartsTable+` (namespace, table_name, owner, data_files, spans, claims, rows, bytes, urgent,
				mirror_file, mirror_sha256, mirror_spans, mirror_rows)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
			s.cfg.Namespace, p.name, s.cfg.InstanceID, string(files), string(sj), string(cj), p.rows, p.bytes, urgent,
			mfile, msum, mspans, mrows).Scan(&ids[i])
		if err != nil {
			return fmt.Errorf("iceberg: publish part of table %q: %w", p.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("iceberg: publish parts: %w", err)
	}
	for i, p := range parts {
		if ids[i] != 0 {
			p.partID = ids[i]
		}
	}
	return nil
}

// partOutcome is a finished part as its stager learns it.
type partOutcome struct {
	state       string
	rowsWritten int64
	snapshotID  int64
	// mirrorSnapshotID is the mirror commit that applied the part's
	// changes (0: none, or none needed).
	mirrorSnapshotID int64
}

// waitParts polls the parts' states until none is staged, or ctx ends.
func (s *Sink) waitParts(ctx context.Context, db *sql.DB, ids []int64) (map[int64]partOutcome, error) {
	start := time.Now()
	defer func() { s.committer.waitSeconds.Observe(time.Since(start).Seconds()) }()
	t := time.NewTicker(partPoll)
	defer t.Stop()
	for {
		out, open, err := readParts(ctx, db, ids)
		if err != nil {
			return nil, err
		}
		if open == 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("iceberg: waiting for the elected committer (%d parts not committed yet): %w", open, context.Cause(ctx))
		case <-t.C:
		}
	}
}

func readParts(ctx context.Context, db *sql.DB, ids []int64) (map[int64]partOutcome, int, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, state, COALESCE(rows_written, 0), COALESCE(snapshot_id, 0),
		COALESCE(mirror_snapshot_id, 0), `+mirrorPendingSQL+` FROM `+PartsTable+` WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, 0, fmt.Errorf("iceberg: read part states: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]partOutcome, len(ids))
	open := 0
	for rows.Next() {
		var (
			id      int64
			o       partOutcome
			pending bool
		)
		if err := rows.Scan(&id, &o.state, &o.rowsWritten, &o.snapshotID, &o.mirrorSnapshotID, &pending); err != nil {
			return nil, 0, fmt.Errorf("iceberg: read part states: %w", err)
		}
		// A committed part waits for its mirror too, as a direct commit
		// returns once both are committed.
		if o.state == partStaged || pending {
			open++
		}
		out[id] = o
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("iceberg: read part states: %w", err)
	}
	if len(out) != len(ids) {
		return nil, 0, fmt.Errorf("iceberg: %d of %d published parts are gone from %s", len(ids)-len(out), len(ids), PartsTable)
	}
	return out, open, nil
}

// dataFileJSON holds the fields of an iceberg.DataFile that the sink's
// appends set, so that another instance can add the file without reading
// it.
type dataFileJSON struct {
	Path         string            `json:"path"`
	Format       string            `json:"format"`
	SpecID       int32             `json:"spec_id"`
	Partition    map[int]partValue `json:"partition"`
	Records      int64             `json:"records"`
	Size         int64             `json:"size"`
	ColumnSizes  map[int]int64     `json:"column_sizes,omitempty"`
	ValueCounts  map[int]int64     `json:"value_counts,omitempty"`
	NullCounts   map[int]int64     `json:"null_counts,omitempty"`
	NaNCounts    map[int]int64     `json:"nan_counts,omitempty"`
	Distinct     map[int]int64     `json:"distinct_counts,omitempty"`
	Lower        map[int][]byte    `json:"lower,omitempty"`
	Upper        map[int][]byte    `json:"upper,omitempty"`
	SplitOffsets []int64           `json:"split_offsets,omitempty"`
	SortOrderID  *int              `json:"sort_order_id,omitempty"`
	KeyMetadata  []byte            `json:"key_metadata,omitempty"`
}

// partValue is a partition value with its Go type, which the manifest
// writer needs back.
type partValue struct {
	Type  string `json:"t"`
	Value int64  `json:"v,omitempty"`
	Str   string `json:"s,omitempty"`
}

func encodePartValue(v any) (partValue, error) {
	switch x := v.(type) {
	case nil:
		return partValue{Type: "null"}, nil
	case int32:
		return partValue{Type: "int32", Value: int64(x)}, nil
	case int64:
		return partValue{Type: "int64", Value: x}, nil
	case int:
		return partValue{Type: "int64", Value: int64(x)}, nil
	case iceberg.Date:
		return partValue{Type: "date", Value: int64(x)}, nil
	case iceberg.Timestamp:
		return partValue{Type: "timestamp", Value: int64(x)}, nil
	case string:
		return partValue{Type: "string", Str: x}, nil
	}
	return partValue{}, fmt.Errorf("partition value of type %T cannot be published", v)
}

func (p partValue) decode() (any, error) {
	switch p.Type {
	case "null":
		return nil, nil
	case "int32":
		return int32(p.Value), nil
	case "int64":
		return p.Value, nil
	case "date":
		return iceberg.Date(p.Value), nil
	case "timestamp":
		return iceberg.Timestamp(p.Value), nil
	case "string":
		return p.Str, nil
	}
	return nil, fmt.Errorf("unknown partition value type %q", p.Type)
}

func encodeDataFiles(files []iceberg.DataFile) ([]byte, error) {
	out := make([]dataFileJSON, 0, len(files))
	for _, df := range files {
		if df.ContentType() != iceberg.EntryContentData {
			return nil, fmt.Errorf("data file %s: content %v is not data", df.FilePath(), df.ContentType())
		}
		j := dataFileJSON{
			Path: df.FilePath(), Format: string(df.FileFormat()), SpecID: df.SpecID(),
			Partition: make(map[int]partValue), Records: df.Count(), Size: df.FileSizeBytes(),
			ColumnSizes: df.ColumnSizes(), ValueCounts: df.ValueCounts(), NullCounts: df.NullValueCounts(),
			NaNCounts: df.NaNValueCounts(), Distinct: df.DistinctValueCounts(), Lower: df.LowerBoundValues(),
			Upper: df.UpperBoundValues(), SplitOffsets: df.SplitOffsets(), SortOrderID: df.SortOrderID(),
			KeyMetadata: df.KeyMetadata(),
		}
		for id, v := range df.Partition() {
			pv, err := encodePartValue(v)
			if err != nil {
				return nil, fmt.Errorf("data file %s: %w", df.FilePath(), err)
			}
			j.Partition[id] = pv
		}
		out = append(out, j)
	}
	return json.Marshal(out)
}

// decodeDataFiles rebuilds published data files against the table's
// metadata (their partition spec and its logical types).
func decodeDataFiles(meta table.Metadata, b []byte) ([]iceberg.DataFile, error) {
	var in []dataFileJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("decode data files: %w", err)
	}
	out := make([]iceberg.DataFile, 0, len(in))
	for _, j := range in {
		spec := meta.PartitionSpecByID(int(j.SpecID))
		if spec == nil {
			return nil, fmt.Errorf("data file %s: no partition spec %d", j.Path, j.SpecID)
		}
		part := make(map[int]any, len(j.Partition))
		for id, pv := range j.Partition {
			v, err := pv.decode()
			if err != nil {
				return nil, fmt.Errorf("data file %s: %w", j.Path, err)
			}
			part[id] = v
		}
		b, err := iceberg.NewDataFileBuilder(*spec, iceberg.EntryContentData, j.Path, iceberg.FileFormat(j.Format),
			part, partitionLogicalTypes(meta, spec), nil, j.Records, j.Size)
		if err != nil {
			return nil, fmt.Errorf("data file %s: %w", j.Path, err)
		}
		b.ColumnSizes(j.ColumnSizes).ValueCounts(j.ValueCounts).NullValueCounts(j.NullCounts).
			NaNValueCounts(j.NaNCounts).LowerBoundValues(j.Lower).UpperBoundValues(j.Upper).SplitOffsets(j.SplitOffsets)
		if len(j.Distinct) > 0 {
			b.DistinctValueCounts(j.Distinct)
		}
		if j.SortOrderID != nil {
			b.SortOrderID(*j.SortOrderID)
		}
		if len(j.KeyMetadata) > 0 {
			b.KeyMetadata(j.KeyMetadata)
		}
		out = append(out, b.Build())
	}
	return out, nil
}

// sortedOwners lists the distinct owners of parts, sorted.
func sortedOwners(owners map[string]struct{}) []string {
	return slices.Sorted(maps.Keys(owners))
}
