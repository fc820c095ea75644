// Package fence carries the fencing claims of a commit from the server to
// the catalog: the sources whose batches a commit writes, each with the
// lease epoch under which its batches were accepted. The catalog's
// transaction checks them against the lease table before it changes
// anything (see docs/scale-out.md).
package fence

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// LeaseTable is the PostgreSQL table of source leases, in the catalog's
// database.
const LeaseTable = "lakehouse_source_leases"

// Claim says: this commit writes batches of Source accepted under Epoch.
type Claim struct {
	Source string
	Epoch  uint64
}

// Claims are the claims of one commit by one owner (instance id).
type Claims struct {
	Owner  string
	Claims []Claim
}

type claimsKey struct{}

// With returns ctx carrying c; every catalog transaction begun with it
// checks c first.
func With(ctx context.Context, c Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// From returns the claims ctx carries.
func From(ctx context.Context) (Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(Claims)
	return c, ok && len(c.Claims) > 0
}

// ErrFenced is matched (errors.Is) by every *Error.
var ErrFenced = errors.New("fenced: another instance owns the source")

// Error is a commit refused because some claims no longer hold: the sources
// moved to another instance (or to a newer epoch of this one).
type Error struct {
	Failed []Claim
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Failed))
	for i, c := range e.Failed {
		parts[i] = fmt.Sprintf("%s@%d", c.Source, c.Epoch)
	}
	return fmt.Sprintf("%v: lease claims no longer hold: %s", ErrFenced, strings.Join(parts, ", "))
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *Error) Is(target error) bool { return target == ErrFenced }

// Lease is one row of the lease table.
type Lease struct {
	Owner string
	Epoch uint64
}

// Check returns an *Error naming every claim that rows (the lease rows of
// the claimed sources, by source id) do not hold for c.Owner.
func Check(c Claims, rows map[string]Lease) error {
	var failed []Claim
	for _, cl := range c.Claims {
		if l, ok := rows[cl.Source]; !ok || l.Owner != c.Owner || l.Epoch != cl.Epoch {
			failed = append(failed, cl)
		}
	}
	if failed != nil {
		return &Error{Failed: failed}
	}
	return nil
}
