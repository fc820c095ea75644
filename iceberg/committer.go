package iceberg

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// The elected committer's commit of a table (committerelect.go elects it):
// every staged part of the table in one snapshot, parts whose claims no
// longer hold left out and marked fenced.

// maxPartsPerCommit bounds the parts one snapshot takes (the rest wait for
// the next interval).
const maxPartsPerCommit = 1000

// pubPart is a published part as the committer reads it.
type pubPart struct {
	id     int64
	owner  string
	files  []byte // dataFileJSON, decoded against the table at commit
	claims []fence.Claim
	st     *stagedTable // spans, rows and bytes
	// mirrorFile is the part's change file ("": none), deleted when the
	// part is fenced.
	mirrorFile string
}

func loadParts(ctx context.Context, db *sql.DB, ns, name string) ([]*pubPart, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, owner, data_files, spans, claims, rows, bytes, COALESCE(mirror_file, '') FROM `+PartsTable+`
		WHERE namespace = $1 AND table_name = $2 AND state = 'staged' ORDER BY id LIMIT $3`, ns, name, maxPartsPerCommit)
	if err != nil {
		return nil, fmt.Errorf("iceberg: read staged parts: %w", err)
	}
	defer rows.Close()
	var out []*pubPart
	for rows.Next() {
		var (
			p            = &pubPart{st: &stagedTable{name: name, spans: make(map[string]span)}}
			spans, claim []byte
		)
		if err := rows.Scan(&p.id, &p.owner, &p.files, &spans, &claim, &p.st.rows, &p.st.bytes, &p.mirrorFile); err != nil {
			return nil, fmt.Errorf("iceberg: read staged parts: %w", err)
		}
		var sj map[string]spanJSON
		if err := json.Unmarshal(spans, &sj); err != nil {
			return nil, fmt.Errorf("iceberg: part %d: spans: %w", p.id, err)
		}
		for src, sp := range sj {
			p.st.spans[src] = span{minBatch: sp.Min, maxBatch: sp.Max, maxEntry: sp.Entry}
		}
		if err := json.Unmarshal(claim, &p.claims); err != nil {
			return nil, fmt.Errorf("iceberg: part %d: claims: %w", p.id, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// setPartsState finishes parts that are still staged. It returns the
// change files of the parts it changed.
func setPartsState(ctx context.Context, db *sql.DB, ids []int64, state string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := db.QueryContext(ctx, `UPDATE `+PartsTable+` SET state = $2, finished_at = now(), rows_written = 0
		WHERE id = ANY($1) AND state = 'staged' RETURNING COALESCE(mirror_file, '')`, ids, state)
	if err != nil {
		return nil, fmt.Errorf("iceberg: mark parts %s: %w", state, err)
	}
	defer rows.Close()
	var files []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return nil, fmt.Errorf("iceberg: mark parts %s: %w", state, err)
		}
		if f != "" {
			files = append(files, f)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("iceberg: mark parts %s: %w", state, err)
	}
	return files, nil
}

// precheckClaims returns the ids of parts whose claims no longer hold, read
// without locks (the commit checks again under locks).
func (s *Sink) precheckClaims(ctx context.Context, parts []*pubPart) ([]int64, error) {
	var check error
	err := s.withCatalogConn(ctx, func(c *pgx.Conn) error {
		check = checkPartClaims(ctx, c, parts, leaseReadSQL)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("iceberg: part fence check: %w", err)
	}
	var pf *partsFencedError
	if errors.As(check, &pf) {
		return pf.ids, nil
	}
	return nil, check
}

// commitPublished commits the table's staged parts in one snapshot. A part
// whose claims no longer hold is marked fenced and left out; a part whose
// rows the table already holds is marked committed with none written.
func (s *Sink) commitPublished(ctx context.Context, name string, urgent bool) error {
	unlock, err := s.lockTableForIngest(ctx, s.Identifier(name))
	if err != nil {
		return err
	}
	defer unlock()
	db := s.partsDB()
	tbl, err := s.loadOrCreate(ctx, sink.SanitizeName(name), name)
	if err != nil {
		return err
	}
	// The table's latest snapshot counts too: made by the holder before
	// this one (a role just taken from a committer that died right after
	// its commit), or by maintenance.
	if snap := tbl.CurrentSnapshot(); snap != nil {
		s.committer.sawSnap(name, time.UnixMilli(snap.TimestampMs))
		if !s.commitDue(name, time.Now(), urgent) {
			return nil
		}
	}
	parts, err := loadParts(ctx, db, s.cfg.Namespace, name)
	if err != nil || len(parts) == 0 {
		return err
	}
	fencedIDs, err := s.precheckClaims(ctx, parts)
	if err != nil {
		return err
	}
	parts = s.dropFenced(ctx, name, parts, fencedIDs)
	// Each pass leaves out what failed in the one before: fenced parts
	// and parts another session took are not retried as conflicts.
	for attempt := 1; len(parts) > 0; attempt++ {
		err := s.commitPartsOnce(ctx, name, parts)
		var pf *partsFencedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &pf):
			parts = s.dropFenced(ctx, name, parts, pf.ids)
			continue
		case errors.Is(err, errPartsChanged):
			if parts, err = loadParts(ctx, db, s.cfg.Namespace, name); err != nil {
				return err
			}
		case !errors.Is(err, table.ErrCommitFailed) || ctx.Err() != nil:
			return err
		}
		if attempt >= s.cfg.CommitAttempts {
			return fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		s.log.Warn("elected committer: commit conflict, retrying", "table", name, "attempt", attempt, "err", err)
	}
	return nil
}

// dropFenced marks the parts named by ids fenced and returns the others.
func (s *Sink) dropFenced(ctx context.Context, name string, parts []*pubPart, ids []int64) []*pubPart {
	if len(ids) == 0 {
		return parts
	}
	if files, err := setPartsState(ctx, s.partsDB(), ids, partFenced); err != nil {
		s.log.Warn("elected committer: marking fenced parts failed", "table", name, "err", err)
	} else {
		s.removeChangeFiles(ctx, name, files) // never applied
		s.committer.partsFenced.Add(int64(len(ids)))
		s.log.Warn("elected committer: parts fenced (their sources moved)", "table", name, "parts", ids)
	}
	drop := make(map[int64]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
	}
	kept := parts[:0:0]
	for _, p := range parts {
		if !drop[p.id] {
			kept = append(kept, p)
		}
	}
	return kept
}

// commitPartsOnce commits parts in one snapshot on the table's latest
// state.
func (s *Sink) commitPartsOnce(ctx context.Context, name string, parts []*pubPart) error {
	tbl, err := s.loadOrCreate(ctx, sink.SanitizeName(name), name)
	if err != nil {
		return err
	}
	have, err := watermarksFromProps(tbl.Properties())
	if err != nil {
		return err
	}
	// In id order, each part against the watermarks and the parts taken
	// before it: a part that overlaps is refused (see refuseParts).
	running := make(map[string]sink.Watermark, len(have))
	for src, w := range have {
		running[src] = w
	}
	var (
		files            []iceberg.DataFile
		written, refused []int64
		rows             int64
		marks            = make(map[string]sink.Watermark)
		owners           = make(map[string]struct{})
		pc               = &partsCommit{}
		lastID           int64
	)
	for _, p := range parts {
		done, err := committedBefore(p.st, running)
		if err != nil {
			s.log.Error("elected committer: part overlaps rows already committed; refused", "table", name, "part", p.id, "owner", p.owner, "err", err)
			refused = append(refused, p.id)
			continue
		}
		pc.parts = append(pc.parts, p)
		lastID = max(lastID, p.id)
		// A part without spans has mirror changes alone (the changelog
		// held its rows when staged): committed with no files, its mirror
		// is applied after.
		if done || len(p.st.spans) == 0 {
			continue
		}
		dfs, err := decodeDataFiles(tbl.Metadata(), p.files)
		if err != nil {
			return fmt.Errorf("part %d: %w", p.id, err)
		}
		files = append(files, dfs...)
		written = append(written, p.id)
		rows += p.st.rows
		owners[p.owner] = struct{}{}
		for src, sp := range p.st.spans {
			w := sink.Watermark{BatchSeq: sp.maxBatch, EntrySeq: sp.maxEntry}
			sink.MergeWatermark(marks, src, w)
			sink.MergeWatermark(running, src, w)
		}
	}
	if len(refused) > 0 {
		return &partsFencedError{ids: refused}
	}
	if len(files) == 0 {
		// Every part was committed before: finish them.
		ids := make([]int64, len(pc.parts))
		for i, p := range pc.parts {
			ids[i] = p.id
		}
		_, err := setPartsState(ctx, s.partsDB(), ids, partCommitted)
		return err
	}
	pc.written = written
	props, wmJSON, err := s.watermarkProps(have, marks, s.changelogProps(tbl.Properties()))
	if err != nil {
		return err
	}
	summary := iceberg.Properties{
		SummaryFlushID:    strconv.FormatInt(lastID, 10),
		SummaryTrigger:    "elected-committer",
		SummaryRows:       strconv.FormatInt(rows, 10),
		SummarySkipped:    "0",
		SummaryWatermarks: string(wmJSON),
		SummaryParts:      strconv.Itoa(len(written)),
		SummaryInstances:  strings.Join(sortedOwners(owners), ","),
	}
	if s.cfg.BeforeTableCommit != nil {
		if err := s.cfg.BeforeTableCommit(name); err != nil {
			return fmt.Errorf("before commit hook: %w", err)
		}
	}
	txn := tbl.NewTransaction()
	if err := txn.AddDataFiles(ctx, files, summary, table.WithoutDuplicateCheck()); err != nil {
		return fmt.Errorf("add data files: %w", err)
	}
	if err := verifyStaged(txn, uint64(lastID), rows); err != nil {
		return err
	}
	if len(props) > 0 {
		if err := txn.SetProperties(props); err != nil {
			return fmt.Errorf("set properties: %w", err)
		}
	}
	committed, err := txn.Commit(withPartsCommit(ctx, pc))
	if err != nil {
		return fmt.Errorf("catalog commit: %w", err)
	}
	s.committer.commits.Add(1)
	s.committer.partsCommitted.Add(int64(len(pc.parts)))
	if snap := committed.CurrentSnapshot(); snap != nil {
		s.committer.sawSnap(name, time.UnixMilli(snap.TimestampMs))
		// For the stagers' results only: the state changed with the commit.
		if _, err := s.partsDB().ExecContext(ctx, `UPDATE `+PartsTable+` SET snapshot_id = $2 WHERE id = ANY($1)`,
			written, snap.SnapshotID); err != nil {
			s.log.Warn("elected committer: recording the snapshot id failed", "table", name, "err", err)
		}
	}
	s.log.Debug("elected committer: table committed", "table", name, "parts", len(written), "rows", rows,
		"files", len(files), "instances", summary[SummaryInstances])
	return nil
}
