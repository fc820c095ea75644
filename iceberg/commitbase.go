package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
)

// A flush's stage loads the tables it writes (stageTable) and the mirrors
// whose watermarks it reads (stageMirrorWatermarks); the commit after it
// loaded each of them again, and iceberg-go's SQL catalog a third time
// inside CommitTable (which commitsql.go avoids). A load reads and parses
// the table's metadata file, which holds every kept snapshot (each summary
// with its commit's watermarks): at a commit a second, on W1 with mirrors,
// half of a mirror commit's CPU was spent parsing metadata. So a commit's first
// attempt starts from the table its stage loaded when the catalog row
// still points at the metadata that table was read from: one indexed read
// of the row instead of a read and a parse of the file.
//
// The check runs under the table's commit lock, so no commit of this
// process (a maintenance pass, another flush) lands between it and the
// commit; another process's commit can, as it could between a load and the
// commit before, and fails the commit's requirements as it did then. The
// bases live from the stage to the end of the commit, as the stage caches
// always did: metadata that a commit built keeps every metadata it was
// built from alive (iceberg-go's snapshot producer), so no committed table
// is kept for the next flush.

// stageBases are the tables a commit may start from, by CDC table name.
type stageBases struct {
	changelogs map[string]*table.Table // as stageTable loaded them (wrapped)
	mirrors    map[string]*table.Table // as stageMirrorWatermarks loaded them
}

// takeStageBases returns the tables Stage loaded and empties the stage
// caches: the commit changes the tables, so the next Stage loads them
// again. Called with mu held.
func (s *Sink) takeStageBases() stageBases {
	b := stageBases{changelogs: s.stageTables, mirrors: s.stageMirrorTables}
	s.stageTables, s.stageMirrorTables = nil, nil
	return b
}

func (b stageBases) changelog(name string) *table.Table { return b.changelogs[name] }
func (b stageBases) mirror(name string) *table.Table    { return b.mirrors[name] }

// stillCurrent reports whether the catalog's row of ident still points at
// base's metadata. It is false when base is nil, when the catalog cannot
// tell with a read of its row (REST, Glue, a namespace of several levels)
// and when that read fails: the caller then loads the table, which reports
// what is wrong with the catalog.
func (s *Sink) stillCurrent(ctx context.Context, ident table.Identifier, base *table.Table) bool {
	oc, ok := s.cat.(*ownedDBCatalog)
	if base == nil || !ok {
		return false
	}
	loc, ok, err := oc.metadataLocation(ctx, ident)
	if err != nil {
		s.log.Debug("could not read a table's catalog row; loading it", "table", strings.Join(ident, "."), "err", err)
	}
	return ok && loc == base.MetadataLocation()
}

// catalogRow returns the key of ident's row in iceberg-go's SQL catalog
// (namespace, table name); ok is false where the namespace's key is not
// its name: a namespace of several levels, or one with a dot or looking
// like an encoded one (catalog/sql.namespaceToString).
func catalogRow(ident table.Identifier) (ns, name string, ok bool) {
	parts := catalog.NamespaceFromIdent(ident)
	if len(parts) != 1 || strings.Contains(parts[0], ".") || strings.HasPrefix(parts[0], "__iceberg_namespace_") {
		return "", "", false
	}
	return parts[0], catalog.TableNameFromIdent(ident), true
}

// metadataLocation reads ident's current metadata location from its
// catalog row. ok is false, with no error, where catalogRow cannot key the
// row or the row is missing.
func (c *ownedDBCatalog) metadataLocation(ctx context.Context, ident table.Identifier) (loc string, ok bool, err error) {
	ns, name, ok := catalogRow(ident)
	if !ok {
		return "", false, nil
	}
	var got sql.NullString
	err = c.db.QueryRowContext(ctx,
		`SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3`,
		c.Name(), ns, name).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read the catalog row of %s: %w", strings.Join(ident, "."), err)
	}
	return got.String, got.Valid, nil
}
