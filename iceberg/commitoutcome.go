package iceberg

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errCommitUnknown marks a catalog commit that failed after it may have
// been applied: a broken connection, a deadline or a cancellation during
// the catalog's update, a server error. The files the commit wrote may be
// the table's now, so its caller must not delete them; orphan cleanup,
// which checks every snapshot's references, removes them if they are not.
var errCommitUnknown = errors.New("iceberg: the catalog may have applied the commit")

// catalogCommitError wraps the error of a failed Transaction.Commit with
// errCommitUnknown unless the catalog refused the commit, which then
// applied nothing: a conflict iceberg-go did not replay, a failed
// requirement, or a mirror commit decided again (errMirrorMoved).
func catalogCommitError(err error) error {
	if err == nil || isRequirementFailure(err) || errors.Is(err, errMirrorMoved) {
		return err
	}
	return fmt.Errorf("%w: %w", errCommitUnknown, err)
}

// rewriteCommitGrace bounds the catalog commit of a compaction whose
// context was cancelled (a graceful stop) once its files were written.
const rewriteCommitGrace = 30 * time.Second

// rewriteCommitContext returns the context of a compaction's catalog
// commit, which its caller's cancellation does not interrupt: cancelled in
// the middle of the database's COMMIT, the commit's outcome would be
// unknown, and the rewrite's files left to orphan cleanup whether it landed
// or not. ctx's deadline (a maintenance job's timeout) still holds, and
// rewriteCommitGrace bounds the commit in any case.
func rewriteCommitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := time.Now().Add(rewriteCommitGrace)
	if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}
