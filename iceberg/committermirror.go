package iceberg

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// The elected committer's mirror commit (Config.Mirror): after a table's
// changelog commit has marked its parts committed, the committer reads the
// change files of the table's committed parts whose mirror is pending
// (mirrorPendingSQL), oldest first, and commits them to the mirror in one
// snapshot with commitMirror, as a direct commit does; that catalog
// transaction also sets the parts' mirror_applied (fence.go calls
// mirrorApply.apply), only if none of them was applied already.
//
// Why the changelog first: a part's claims are checked in the changelog
// commit's transaction, so a part whose source moved meanwhile is fenced
// there, before its changes reach the mirror. Committing the mirror first
// would apply the changes of a part that the changelog's check then
// fences: the mirror would hold rows the changelog never gets, and its
// watermarks would skip the successor's batches of the same numbers.
//
// A committer that stops between the two leaves the parts committed with
// their mirror pending: the stagers keep waiting (a part is finished for
// them once its mirror is applied), the change files stay, and the next
// round of whichever instance holds the role applies them (tables with
// pending mirrors are due at once). The mirror's watermarks skip what it
// holds already, and mirror_applied makes each part's application a single
// catalog commit.

// mirrorPub is a committed part whose mirror is pending.
type mirrorPub struct {
	id   int64
	file changeFile
	part *mirrorPart
}

func loadMirrorParts(ctx context.Context, db *sql.DB, ns, name string) ([]*mirrorPub, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, mirror_file, COALESCE(mirror_sha256, ''), COALESCE(mirror_spans, '{}'), mirror_rows
		FROM `+PartsTable+` WHERE namespace = $1 AND table_name = $2 AND `+mirrorPendingSQL+` ORDER BY id LIMIT $3`,
		ns, name, maxPartsPerCommit)
	if err != nil {
		return nil, fmt.Errorf("iceberg: read pending mirror parts: %w", err)
	}
	defer rows.Close()
	var out []*mirrorPub
	for rows.Next() {
		var (
			p     = &mirrorPub{part: &mirrorPart{spans: make(map[string]span)}}
			spans []byte
		)
		if err := rows.Scan(&p.id, &p.file.path, &p.file.sha256, &spans, &p.part.rows); err != nil {
			return nil, fmt.Errorf("iceberg: read pending mirror parts: %w", err)
		}
		var sj map[string]spanJSON
		if err := json.Unmarshal(spans, &sj); err != nil {
			return nil, fmt.Errorf("iceberg: part %d: mirror spans: %w", p.id, err)
		}
		for src, sp := range sj {
			p.part.spans[src] = span{minBatch: sp.Min, maxBatch: sp.Max, maxEntry: sp.Entry}
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// commitPublishedMirror applies the pending mirrors of the table's
// committed parts.
func (s *Sink) commitPublishedMirror(ctx context.Context, name string) error {
	db := s.partsDB()
	pubs, err := loadMirrorParts(ctx, db, s.cfg.Namespace, name)
	if err != nil || len(pubs) == 0 {
		return err
	}
	// The change files are under the changelog table's location.
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		return err
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return err
	}
	ids := make([]int64, len(pubs))
	parts := make([]*mirrorPart, len(pubs))
	paths := make([]string, len(pubs))
	for i, p := range pubs {
		if err := readMirrorChanges(fs, p.file, p.part); err != nil {
			return fmt.Errorf("part %d: %w", p.id, err)
		}
		ids[i], parts[i], paths[i] = p.id, p.part, p.file.path
	}
	// Applied whatever this instance's Config.Mirror: the parts of
	// instances with the mirror on (their Open made its namespace) do not
	// wait for a committer with it on (the mirror turned on one instance
	// at a time).
	ma := &mirrorApply{ids: ids}
	c := sink.CommitInfo{ID: uint64(ids[len(ids)-1]), Reason: "elected-committer"}
	mr, err := s.commitMirror(ctx, name, parts, c, func(ctx context.Context) context.Context {
		return context.WithValue(ctx, mirrorApplyKey{}, ma)
	}, nil)
	if errors.Is(err, errPartsChanged) {
		// Another holder of the role applied them (a hand-over).
		s.log.Info("elected committer: pending mirror parts were applied by another committer", "table", name, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if !mr.committed {
		// The mirror's watermarks covered every part: nothing to commit.
		if err := markMirrorApplied(ctx, db, ids, 0); err != nil {
			return err
		}
	} else if mr.snapshotID != 0 {
		// For the stagers' results only: the state changed with the commit.
		if err := markMirrorApplied(ctx, db, ids, mr.snapshotID); err != nil {
			s.log.Warn("elected committer: recording the mirror snapshot id failed", "table", name, "err", err)
		}
	}
	s.removePaths(ctx, tbl, paths...)
	for _, p := range paths {
		s.unmarkStagedPath(p)
	}
	if mr.snapshotID != 0 && s.cfg.MirrorCompactDeleteFiles >= 0 && mr.deleteFiles > 0 {
		s.mirrorCompact.note(name, mr.growth) // compacted in the background, never here
	}
	s.log.Debug("elected committer: mirror committed", "table", name, "parts", len(ids), "rows", mr.written,
		"deleted", mr.deleted, "stale", mr.stale, "skipped", mr.skipped)
	return nil
}

// markMirrorApplied sets parts' mirror applied (outside a mirror commit:
// when there was nothing to commit), and the mirror snapshot that applied
// them when not 0.
func markMirrorApplied(ctx context.Context, db *sql.DB, ids []int64, snapshotID int64) error {
	var err error
	if snapshotID == 0 {
		_, err = db.ExecContext(ctx, `UPDATE `+PartsTable+` SET mirror_applied = true WHERE id = ANY($1)`, ids)
	} else {
		_, err = db.ExecContext(ctx, `UPDATE `+PartsTable+` SET mirror_applied = true, mirror_snapshot_id = $2 WHERE id = ANY($1)`,
			ids, snapshotID)
	}
	if err != nil {
		return fmt.Errorf("iceberg: mark mirror parts applied: %w", err)
	}
	return nil
}

type mirrorApplyKey struct{}

// mirrorApply is the committer's part of a mirror commit's catalog
// transaction: the parts it applies are marked applied, only if every one
// of them is still pending.
type mirrorApply struct {
	ids []int64
}

func (ma *mirrorApply) apply(ctx context.Context, conn *pgx.Conn) error {
	tag, err := conn.Exec(ctx, `UPDATE `+PartsTable+` SET mirror_applied = true WHERE id = ANY($1) AND `+mirrorPendingSQL, ma.ids)
	if err != nil {
		return fmt.Errorf("iceberg: mark mirror parts applied: %w", err)
	}
	if n := tag.RowsAffected(); n != int64(len(ma.ids)) {
		return fmt.Errorf("%w (%d of %d mirror parts still pending)", errPartsChanged, n, len(ma.ids))
	}
	return nil
}
