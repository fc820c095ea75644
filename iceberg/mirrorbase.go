package iceberg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
)

// A mirror commit decides against the table as it loaded it: which changes
// are stale (the order index, synchronised with that snapshot by
// dropForeignIndex) and which keys get an equality delete. iceberg-go's
// optimistic retry replays a conflicting commit on the new head as it was
// decided; that is right only when the head moved by compactions, which
// keep the rows. Two writers of one table at once (two elected committers:
// a holder whose session broke mid-commit while the next one already
// commits; instances with --elected-committer=false) would otherwise both
// apply their decisions: the replayed commit's equality delete removes the
// other's newer row of a key and its older row stays. So each catalog
// commit attempt after the first (a replay) checks that the table has only
// compactions since the snapshot the commit was decided on, and otherwise
// fails with errMirrorMoved: the commit drops its index and is decided
// again. (SQL catalogs only: the REST and Glue catalogs' commits do not
// pass through ownedDBCatalog.)

// errMirrorMoved: another writer committed to the mirror while a commit
// was being made; nothing was committed.
var errMirrorMoved = errors.New("iceberg: another committer changed the mirror table during the commit")

type mirrorBaseKey struct{}

// mirrorBase is the snapshot a mirror commit was decided on (0: none).
type mirrorBase struct {
	snapshot int64
	attempts int // catalog commit attempts so far (one goroutine)
}

func withMirrorBase(ctx context.Context, snapshot int64) context.Context {
	return context.WithValue(ctx, mirrorBaseKey{}, &mirrorBase{snapshot: snapshot})
}

// checkMirrorBase is called by the catalog before each commit attempt of a
// table: a replay of a mirror commit (ctx from withMirrorBase) goes on only
// if the table has only compactions since the commit's snapshot. The
// attempt's own requirement then holds the head that was checked (or
// fails, and the next attempt checks again).
func checkMirrorBase(ctx context.Context, cat catalog.Catalog, ident table.Identifier) error {
	mb, ok := ctx.Value(mirrorBaseKey{}).(*mirrorBase)
	if !ok {
		return nil
	}
	mb.attempts++
	if mb.attempts == 1 {
		return nil
	}
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		return fmt.Errorf("iceberg: reload mirror table %s for a retried commit: %w", strings.Join(ident, "."), err)
	}
	if !onlyCompactedSince(tbl, mb.snapshot) {
		return fmt.Errorf("%w (%s, decided on snapshot %d)", errMirrorMoved, strings.Join(ident, "."), mb.snapshot)
	}
	return nil
}
