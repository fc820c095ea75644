package main

import (
	"context"
	"errors"
	"strings"

	"github.com/apache/iceberg-go/catalog"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// tableRow is a line of `lakehouse tables`: a changelog table and the
// name of its mirror table, so that a user sees where the current state is
// (mirrors are on by default, in another namespace).
type tableRow struct {
	iceberg.TableInfo
	// Mirror is the mirror table's identifier (cdc_current.users), empty
	// when the table has none (a server with --mirror=false).
	Mirror string `json:"mirror,omitempty"`
}

func withMirrors(ctx context.Context, s *iceberg.Sink, infos []iceberg.TableInfo) ([]tableRow, error) {
	rows := make([]tableRow, len(infos))
	for i, t := range infos {
		rows[i].TableInfo = t
		name := t.OriginalName
		if name == "" {
			name = t.Name
		}
		if _, err := s.LoadMirrorTable(ctx, name); err != nil {
			// No mirror, or no mirror namespace yet (created with the
			// first mirror table; some catalogs say so).
			if errors.Is(err, catalog.ErrNoSuchTable) || errors.Is(err, catalog.ErrNoSuchNamespace) {
				continue
			}
			return nil, err
		}
		rows[i].Mirror = strings.Join(s.MirrorIdentifier(name), ".")
	}
	return rows, nil
}
