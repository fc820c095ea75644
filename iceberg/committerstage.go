package iceberg

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// commitViaCommitter is CommitStaged with Config.ElectedCommitter: the
// staged parts are published with the fencing claims the context carries
// (s.mu held), and the call returns once the elected committers have
// committed or fenced every one of them (or ctx ends: a retry with the same
// staged flushes waits for the same parts). It waits without s.mu, which it
// releases. Urgent parts (a manual commit's, sink.ReasonManual) are
// committed at the committer's next poll, not at the next commit slot. The result is
// what a direct commit reports: rows written per
// table, and a *fence.Error naming the claims of fenced parts. Tables whose
// parts committed stay committed, as with a direct commit that fails at a
// later table.
func (s *Sink) commitViaCommitter(ctx context.Context, sts []*staged, urgent bool) (sink.Result, error) {
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()
	var res sink.Result
	if s.closed {
		return res, fmt.Errorf("iceberg: sink is closed")
	}
	s.dropStageCache()
	// Every epoch a source's batches were accepted under is claimed, as the
	// direct commit's fence does: a part holding batches of an epoch the
	// source has left is fenced even if a later epoch of it still holds.
	claims := make(map[string][]uint64)
	if c, ok := fence.From(ctx); ok {
		if c.Owner != s.cfg.InstanceID {
			return res, fmt.Errorf("iceberg: fencing claims of instance %q, but this sink is instance %q", c.Owner, s.cfg.InstanceID)
		}
		for _, cl := range c.Claims {
			if !slices.Contains(claims[cl.Source], cl.Epoch) {
				claims[cl.Source] = append(claims[cl.Source], cl.Epoch)
			}
		}
	}
	var parts []*stagedTable
	for _, st := range sts {
		res.RowsSkipped += st.skipped
		for _, t := range st.tables {
			// A table with mirror changes alone is published too: the
			// committer applies them to the mirror.
			if len(t.files) > 0 || t.mirror != nil {
				parts = append(parts, t)
			}
		}
	}
	if len(parts) == 0 {
		return res, nil
	}
	db := s.partsDB()
	if err := s.publishParts(ctx, db, parts, claims, urgent); err != nil {
		// Parts not published keep their change files for a retry of the
		// same staged flushes; a stage that is never retried leaves them
		// to orphan cleanup.
		return res, err
	}
	ids := make([]int64, len(parts))
	for i, p := range parts {
		ids[i] = p.partID
	}
	locked = false
	s.mu.Unlock()
	out, err := s.waitParts(ctx, db, ids)
	if err != nil {
		return res, err
	}
	byTable := make(map[string]*sink.TableCommit)
	mirrors := make(map[string]*sink.TableCommit)
	var (
		suspects []fence.Claim // the claims of fenced parts
		fenced   bool
	)
	for _, p := range parts {
		o := out[p.partID]
		s.unmarkStaged(p.files)
		// The committer deletes the change file once applied or fenced.
		s.unmarkStagedPath(p.mirrorFile.path)
		if o.state == partCommitted && o.mirrorSnapshotID != 0 && p.mirror != nil {
			mc := mirrors[p.name]
			if mc == nil {
				mc = &sink.TableCommit{Table: s.cfg.MirrorNamespace + "." + sink.SanitizeName(p.name)}
				mirrors[p.name] = mc
			}
			mc.Rows += p.mirror.rows
			mc.SnapshotID = max(mc.SnapshotID, o.mirrorSnapshotID)
		}
		switch o.state {
		case partCommitted:
			res.RowsSkipped += p.rows - o.rowsWritten
			if o.rowsWritten == 0 {
				continue
			}
			res.RowsWritten += o.rowsWritten
			res.BytesWritten += p.bytes
			for _, df := range p.files {
				res.Paths = append(res.Paths, df.FilePath())
			}
			tc := byTable[p.name]
			if tc == nil {
				tc = &sink.TableCommit{Table: sink.SanitizeName(p.name)}
				byTable[p.name] = tc
			}
			tc.Rows += o.rowsWritten
			tc.SnapshotID = max(tc.SnapshotID, o.snapshotID)
		default: // fenced or abandoned
			fenced = true
			for src := range p.spans {
				for _, e := range claims[src] {
					suspects = append(suspects, fence.Claim{Source: src, Epoch: e})
				}
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byTable)) {
		res.Tables++
		res.Commits = append(res.Commits, *byTable[name])
	}
	for _, name := range slices.Sorted(maps.Keys(mirrors)) {
		res.Commits = append(res.Commits, *mirrors[name])
	}
	if fenced {
		// A part is fenced as a whole when one of its sources moved; the
		// server drops the lease and the batches of every source the error
		// names, so it names only those whose claims no longer hold. The
		// others' batches are staged and committed again.
		failed, err := s.failedClaims(ctx, dedupClaims(suspects))
		if err != nil {
			return res, err
		}
		return res, fmt.Errorf("iceberg: the elected committer left parts out: %w", &fence.Error{Failed: failed})
	}
	return res, nil
}

// failedClaims returns the claims that no longer hold: their source's
// lease row has another owner or epoch, or none.
func (s *Sink) failedClaims(ctx context.Context, claims []fence.Claim) ([]fence.Claim, error) {
	ids := make([]string, len(claims))
	for i, c := range claims {
		ids[i] = c.Source
	}
	var rows map[string]fence.Lease
	err := s.withCatalogConn(ctx, func(c *pgx.Conn) (err error) {
		rows, err = readLeases(ctx, c, leaseReadSQL, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("iceberg: check the claims of fenced parts: %w", err)
	}
	var fe *fence.Error
	if errors.As(fence.Check(fence.Claims{Owner: s.cfg.InstanceID, Claims: claims}, rows), &fe) {
		return fe.Failed, nil
	}
	return nil, nil
}

func dedupClaims(in []fence.Claim) []fence.Claim {
	seen := make(map[fence.Claim]bool)
	var out []fence.Claim
	for _, c := range in {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}
