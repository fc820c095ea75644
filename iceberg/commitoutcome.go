package iceberg

import (
	"errors"
	"fmt"
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
