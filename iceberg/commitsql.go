package iceberg

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	iceberg "github.com/apache/iceberg-go"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// iceberg-go's SQL catalog loads the table once more inside CommitTable (a
// read and a parse of its metadata file) to check the commit's
// requirements and build the new metadata on, though the sink has just
// loaded that very table to build the commit (commitbase.go). A sink
// commit names the table its transaction was built on (withCommitBase),
// and the first catalog attempt is made on that table's metadata instead:
// the same requirements checked on it, the same new metadata built
// (table.UpdateTableMetadata) and written at the next version, and the
// catalog row moved only where it still points at that metadata, as
// iceberg-go's conditional UPDATE does, in a transaction begun with the
// commit's context (so the fence of fence.go and the elected committer's
// part updates run in it as before). If the row moved meanwhile, the
// attempt fails with table.ErrCommitFailed and writes nothing to the
// catalog; iceberg-go's retry then loads the table and commits through its
// own CommitTable, as every attempt did before.

type commitBaseKey struct{}

// commitBase is the table a commit's transaction was built on; used once
// the first catalog attempt took it (one goroutine).
type commitBase struct {
	tbl  *table.Table
	used bool
}

// withCommitBase returns ctx naming tbl as the table a commit is built on.
func withCommitBase(ctx context.Context, tbl *table.Table) context.Context {
	return context.WithValue(ctx, commitBaseKey{}, &commitBase{tbl: tbl})
}

// takeCommitBase returns the table of withCommitBase, the first time it is
// asked for ident's; nil otherwise.
func takeCommitBase(ctx context.Context, ident table.Identifier) *table.Table {
	cb, ok := ctx.Value(commitBaseKey{}).(*commitBase)
	if !ok || cb.used || !slices.Equal(cb.tbl.Identifier(), ident) {
		return nil
	}
	cb.used = true
	return cb.tbl
}

// metadataFileName is a metadata file's name as iceberg-go writes it:
// version, UUID, optional codec (catalog/internal.ParseMetadataVersion).
var metadataFileName = regexp.MustCompile(`^(\d+)-[\w-]{36}(?:\.\w+)?\.metadata\.json$`)

// metadataVersion returns the version of a metadata file, -1 when its name
// is not iceberg-go's.
func metadataVersion(location string) int {
	m := metadataFileName.FindStringSubmatch(path.Base(location))
	if m == nil {
		return -1
	}
	v, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return v
}

// commitOnBase is CommitTable on base, the table the commit was built on.
// ok is false, with nothing done, where it does not apply: a row
// catalogRow cannot key, metadata that is
// compressed or named otherwise than iceberg-go names it; the caller then
// commits through iceberg-go.
func (c *ownedDBCatalog) commitOnBase(ctx context.Context, ident table.Identifier, base *table.Table,
	reqs []table.Requirement, updates []table.Update) (meta table.Metadata, loc string, ok bool, err error) {
	ns, name, keyed := catalogRow(ident)
	version := metadataVersion(base.MetadataLocation())
	if !keyed || version < 0 {
		return nil, "", false, nil
	}
	for _, r := range reqs {
		if err := r.Validate(base.Metadata()); err != nil {
			return nil, "", true, err
		}
	}
	updated, err := table.UpdateTableMetadata(base.Metadata(), updates, base.MetadataLocation())
	if err != nil {
		return nil, "", true, err
	}
	if updated.Equals(base.Metadata()) {
		return base.Metadata(), base.MetadataLocation(), true, nil
	}
	if codec := updated.Properties().Get(table.MetadataCompressionKey, table.MetadataCompressionDefault); codec != table.MetadataCompressionCodecNone {
		return nil, "", false, nil
	}
	provider, err := table.LoadLocationProvider(updated.Location(), updated.Properties())
	if err != nil {
		return nil, "", true, err
	}
	loc, err = provider.NewTableMetadataFileLocation(version + 1)
	if err != nil {
		return nil, "", true, err
	}
	if err := c.writeMetadata(ctx, updated, loc); err != nil {
		return nil, "", true, err
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, "", true, err
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2
		WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 AND metadata_location = $2`,
		loc, base.MetadataLocation(), c.Name(), ns, name)
	if err != nil {
		return nil, "", true, fmt.Errorf("error updating table information: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, "", true, fmt.Errorf("error updating table information: %w", err)
	} else if n == 0 {
		return nil, "", true, fmt.Errorf("%w: table %s metadata-location moved underneath us", table.ErrCommitFailed, strings.Join(ident, "."))
	}
	if err := tx.Commit(); err != nil {
		return nil, "", true, fmt.Errorf("error updating table information: %w", err)
	}
	return updated, loc, true, nil
}

// writeMetadata writes meta to loc through the catalog's IO, as iceberg-go
// writes uncompressed metadata (catalog/internal.WriteTableMetadata).
func (c *ownedDBCatalog) writeMetadata(ctx context.Context, meta table.Metadata, loc string) (err error) {
	props := maps.Clone(c.props)
	if props == nil {
		props = iceberg.Properties{}
	}
	maps.Copy(props, meta.Properties())
	fs, err := icebergio.LoadFS(ctx, props, loc)
	if err != nil {
		return err
	}
	wfs, ok := fs.(icebergio.WriteFileIO)
	if !ok {
		return fmt.Errorf("the IO of %s cannot write", loc)
	}
	out, err := wfs.Create(loc)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	return json.NewEncoder(out).Encode(meta)
}
