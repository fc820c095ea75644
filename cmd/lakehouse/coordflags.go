package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// Multi-instance mode (docs/scale-out.md).
const (
	KeyCoordination     = "coordination"
	DefaultCoordination = ""
	// CoordinationCatalog keeps the source leases in the SQL catalog's
	// PostgreSQL database, where commits check them atomically.
	CoordinationCatalog = "catalog"
	KeyLeaseTTL         = "lease-ttl"
	DefaultLeaseTTL     = coord.DefaultLeaseTTL
	KeyAdvertiseAddr    = "advertise-addr"
	// KeyElectedCommitter: one elected committer per table commits every
	// instance's staged files, one snapshot per table per commit interval
	// (iceberg/committer.go).
	KeyElectedCommitter     = "elected-committer"
	DefaultElectedCommitter = false
	// instanceIDFile holds the instance id in the data directory: the
	// lease owner, the same across restarts on one disk.
	instanceIDFile = "instance.id"
)

type coordFlags struct {
	mode      string
	ttl       time.Duration
	advertise string
	committer bool
}

func (c *coordFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, KeyCoordination, DefaultCoordination, "multi-instance mode: \"catalog\" serves each source under a lease kept in the SQL catalog's PostgreSQL database and fences every commit with it (needs --catalog sql with a postgres:// --catalog-uri; see docs/scale-out.md); empty: a single instance")
	fs.DurationVar(&c.ttl, KeyLeaseTTL, DefaultLeaseTTL, "with --coordination: how long a source's lease outlives its instance's last renewal (a dead instance's sources move after it)")
	fs.BoolVar(&c.committer, KeyElectedCommitter, DefaultElectedCommitter, "with --coordination: instances publish their staged files and one elected committer per table (a PostgreSQL advisory lock) commits all of them, so a table gets at most one snapshot per --flush-interval whatever the number of instances; a persisted message can wait up to one more interval (see docs/scale-out.md; not with --mirror)")
	fs.StringVar(&c.advertise, KeyAdvertiseAddr, "", "with --coordination: the gRPC address other instances redirect clients of this instance's sources to (default --grpc-addr, unless it is a wildcard address: then none, and such connects fail with UNAVAILABLE instead)")
}

func (c *coordFlags) validate(sf *sinkFlags) error {
	switch c.mode {
	case DefaultCoordination:
		if c.committer {
			return fmt.Errorf("--%s needs --%s=catalog", KeyElectedCommitter, KeyCoordination)
		}
		return nil
	case CoordinationCatalog:
	default:
		return fmt.Errorf("--%s: unknown mode %q (catalog, or empty for a single instance)", KeyCoordination, c.mode)
	}
	if sf.kind != "iceberg" || sf.catalog != "sql" ||
		!(strings.HasPrefix(sf.catalogURI, "postgres://") || strings.HasPrefix(sf.catalogURI, "postgresql://")) {
		return fmt.Errorf("--%s=catalog needs the iceberg sink with --catalog sql and a postgres:// --catalog-uri: the fence is checked in the catalog's PostgreSQL transactions", KeyCoordination)
	}
	if c.committer && sf.mirror != nil && sf.mirror.on {
		return fmt.Errorf("--%s does not support --mirror yet: turn one of them off", KeyElectedCommitter)
	}
	if c.ttl < time.Second {
		return fmt.Errorf("--%s: %v is below 1s", KeyLeaseTTL, c.ttl)
	}
	return nil
}

// applySink sets the sink options of multi-instance mode, once the lease
// store is open.
func (c *coordFlags) applySink(sf *sinkFlags, leases *coord.Store, interval time.Duration) {
	sf.fenceIdleTx = c.ttl
	if c.committer {
		sf.committer = true
		sf.instanceID = leases.Owner()
		sf.committerInterval = interval
	}
}

// open opens the lease store, or returns nil without coordination.
func (c *coordFlags) open(ctx context.Context, sf *sinkFlags, dataDir, grpcAddr string) (*coord.Store, error) {
	if c.mode == DefaultCoordination {
		return nil, nil
	}
	id, err := instanceID(dataDir)
	if err != nil {
		return nil, err
	}
	addr := c.advertise
	if addr == "" {
		addr = advertisable(grpcAddr)
	}
	return coord.Open(ctx, coord.Options{DSN: sf.catalogURI, Owner: id, Addr: addr, TTL: c.ttl})
}

// advertisable returns the listen address as the address to advertise, or
// "" for a wildcard one (":9090", "0.0.0.0:9090"): other hosts cannot use
// it, so such an instance sends no redirects (connects to it for a source
// it does not own fail with Unavailable) unless --advertise-addr is given.
func advertisable(listen string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return ""
	}
	return listen
}

// instanceID reads the data directory's instance id, creating it.
func instanceID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, instanceIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("instance id: %w", err)
	}
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return id, nil
}
