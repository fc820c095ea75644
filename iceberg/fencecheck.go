package iceberg

import (
	"context"
	"errors"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// fencedOr returns the fence's error in place of err when the commit's
// lease claims no longer hold, and err otherwise. A staged part that the
// table's watermarks cover in part means another writer committed some of
// its batches; with coordination that is a source that moved to another
// instance while this one was paused, and the server must learn it as a
// fence (it then drops the moved sources' batches) rather than as a failed
// commit it would retry forever. The claims are checked the way every
// commit checks them: a transaction begun with them (fence.go).
func (s *Sink) fencedOr(ctx context.Context, err error) error {
	if _, ok := fence.From(ctx); !ok {
		return err
	}
	oc, ok := s.cat.(*ownedDBCatalog)
	if !ok {
		return err
	}
	tx, terr := oc.db.BeginTx(ctx, nil)
	if terr != nil {
		if errors.Is(terr, fence.ErrFenced) {
			return terr
		}
		return err
	}
	_ = tx.Rollback()
	return err
}
