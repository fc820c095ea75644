package iceberg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// The elected committer's part of the catalog transaction (fence.go calls
// apply in BeginTx, before iceberg-go's conditional UPDATE of
// iceberg_tables): the parts' fencing claims are checked with their lease
// rows locked FOR SHARE, and the parts are marked committed, only if every
// one of them is still staged. The catalog's commit and the parts' state
// change are thus one PostgreSQL transaction: a part is committed once, and
// its stager learns it only once it is in the table.

type partsCommitKey struct{}

// partsCommit is the context value of a committer's catalog commit.
type partsCommit struct {
	parts []*pubPart
	// written holds the ids of the parts whose files the commit adds; the
	// others were already covered by the table's watermarks.
	written []int64
}

func withPartsCommit(ctx context.Context, pc *partsCommit) context.Context {
	return context.WithValue(ctx, partsCommitKey{}, pc)
}

// partsFencedError names parts whose claims no longer hold: their sources
// moved. The committer marks them fenced and commits the others.
type partsFencedError struct {
	ids []int64
}

func (e *partsFencedError) Error() string {
	return fmt.Sprintf("%v: published parts %v", fence.ErrFenced, e.ids)
}

// errPartsChanged: some parts were no longer staged (another committer's
// session took the table, or their stager restarted and abandoned them).
var errPartsChanged = errors.New("iceberg: published parts changed state during the commit")

const partsCommitSQL = `UPDATE ` + PartsTable + ` SET state = 'committed', finished_at = now(),
	rows_written = CASE WHEN id = ANY($2) THEN rows ELSE 0 END
	WHERE id = ANY($1) AND state = 'staged'`

func (pc *partsCommit) apply(ctx context.Context, conn *pgx.Conn) error {
	if err := checkPartClaims(ctx, conn, pc.parts, leaseCheckSQL); err != nil {
		return err
	}
	ids := make([]int64, len(pc.parts))
	for i, p := range pc.parts {
		ids[i] = p.id
	}
	tag, err := conn.Exec(ctx, partsCommitSQL, ids, pc.written)
	if err != nil {
		return fmt.Errorf("iceberg: mark parts committed: %w", err)
	}
	if n := tag.RowsAffected(); n != int64(len(ids)) {
		return fmt.Errorf("%w (%d of %d still staged)", errPartsChanged, n, len(ids))
	}
	return nil
}

// checkPartClaims reads the lease rows of every source the parts claim
// (with q, which may lock them) and returns a *partsFencedError naming the
// parts with a claim that does not hold: the lease's owner is not the
// part's stager, or its epoch moved on. A claim that failed never holds
// again (an epoch only grows, and changes with every change of owner).
func checkPartClaims(ctx context.Context, q querier, parts []*pubPart, query string) error {
	var ids []string
	seen := make(map[string]bool)
	for _, p := range parts {
		for _, cl := range p.claims {
			if !seen[cl.Source] {
				seen[cl.Source] = true
				ids = append(ids, cl.Source)
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	got, err := readLeases(ctx, q, query, ids)
	if err != nil {
		return fmt.Errorf("iceberg: part fence check: %w", err)
	}
	var failed []int64
	for _, p := range parts {
		if fence.Check(fence.Claims{Owner: p.owner, Claims: p.claims}, got) != nil {
			failed = append(failed, p.id)
		}
	}
	if failed != nil {
		return &partsFencedError{ids: failed}
	}
	return nil
}
