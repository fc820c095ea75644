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
	"strconv"
	"strings"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/server"
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
	KeyOrphanWait       = "orphan-wait"
	DefaultOrphanWait   = coord.DefaultOrphanWait
	KeyAdvertiseAddr    = "advertise-addr"
	// KeyElectedCommitter: with --coordination, one elected committer per
	// table commits every instance's staged files, one snapshot per table
	// per commit interval (iceberg/committer.go).
	KeyElectedCommitter     = "elected-committer"
	DefaultElectedCommitter = true
	// instanceIDFile holds the instance id in the data directory: the
	// lease owner, the same across restarts on one disk.
	instanceIDFile = "instance.id"
)

type coordFlags struct {
	mode       string
	ttl        time.Duration
	orphanWait time.Duration
	advertise  string
	committer  explicitBool
}

// explicitBool is a boolean flag that knows whether it was given (on the
// command line, in the environment or in the configuration file), for a
// default that depends on other flags.
type explicitBool struct{ value, set bool }

func (b *explicitBool) String() string   { return strconv.FormatBool(b.value) }
func (b *explicitBool) IsBoolFlag() bool { return true }
func (b *explicitBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.value, b.set = v, true
	return nil
}

// electedCommitter reports whether the elected committer runs: by default whenever
// --coordination does.
func (c *coordFlags) electedCommitter() bool {
	return c.mode != DefaultCoordination && c.committer.value
}

func (c *coordFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, KeyCoordination, DefaultCoordination, "multi-instance mode: \"catalog\" serves each source under a lease kept in the SQL catalog's PostgreSQL database and fences every commit with it (needs --catalog sql with a postgres:// --catalog-uri; see docs/scale-out.md); empty: a single instance")
	fs.DurationVar(&c.ttl, KeyLeaseTTL, DefaultLeaseTTL, "with --coordination: how long a source's lease outlives its instance's last renewal (a dead instance's sources move after it)")
	fs.DurationVar(&c.orphanWait, KeyOrphanWait, DefaultOrphanWait, "with --coordination: how long a dead instance keeps a source whose client was acked batches that are not committed and that it cannot resend (ok mode): they are in the dead instance's write-ahead log, committed when it restarts on its data directory or by lakehouse replay; after this the source moves and they are lost (0: move at once)")
	c.committer.value = DefaultElectedCommitter
	fs.Var(&c.committer, KeyElectedCommitter, "with --coordination: instances publish their staged files and one elected committer per table (a PostgreSQL advisory lock) commits all of them, so a table gets at most one snapshot per --flush-interval whatever the number of instances; commits happen at the interval's multiples of Unix time, plus a gather delay of a quarter interval (at most 2s), so keep the instances' clocks in step; with mirrors on (--mirror, the default) it commits the mirror tables too, right after their changelog tables; a commit waits for the committer, so keep --commit-timeout at least twice --flush-interval (see docs/scale-out.md)")
	fs.StringVar(&c.advertise, KeyAdvertiseAddr, "", "with --coordination: the gRPC address other instances redirect clients of this instance's sources to (default --grpc-addr, unless it is a wildcard address: then none, and such connects fail with UNAVAILABLE instead)")
}

func (c *coordFlags) validate(sf *sinkFlags) error {
	if err := c.validateMode(); err != nil {
		return err
	}
	if c.mode == DefaultCoordination {
		if c.committer.set && c.committer.value {
			return fmt.Errorf("--%s needs --%s=catalog", KeyElectedCommitter, KeyCoordination)
		}
		return nil
	}
	if sf.kind != "iceberg" || !coordinatedCatalog(sf) {
		return fmt.Errorf("--%s=catalog needs the iceberg sink with --catalog sql and a postgres:// --catalog-uri: the fence is checked in the catalog's PostgreSQL transactions", KeyCoordination)
	}
	if c.ttl < time.Second {
		return fmt.Errorf("--%s: %v is below 1s", KeyLeaseTTL, c.ttl)
	}
	if c.orphanWait < 0 {
		return fmt.Errorf("--%s: %v is negative", KeyOrphanWait, c.orphanWait)
	}
	return nil
}

// committerTimeoutShort reports whether a commit's wait for the elected
// committer may not fit in --commit-timeout, which bounds it: a part
// published after its table's commit in the slot (an early commit: the
// buffer or the write-ahead log filled) waits for the next slot's, up to an
// interval plus the gather delay (a quarter interval at most) plus that
// commit. Twice the interval leaves at least three quarters of one for the
// staging and the commit; with less, such commits can time out again and
// again (acks say fallback) although nothing is wrong. Not an error: a long
// interval with manual commits alone (urgent parts do not wait for a slot)
// works with any timeout.
func (c *coordFlags) committerTimeoutShort(interval, commitTimeout time.Duration) bool {
	if commitTimeout <= 0 {
		commitTimeout = server.DefaultCommitTimeout
	}
	return c.electedCommitter() && commitTimeout < 2*interval
}

func (c *coordFlags) validateMode() error {
	switch c.mode {
	case DefaultCoordination, CoordinationCatalog:
		return nil
	}
	return fmt.Errorf("--%s: unknown mode %q (catalog, or empty for a single instance)", KeyCoordination, c.mode)
}

// coordinatedCatalog reports whether the catalog can hold the leases and
// the maintenance locks: the SQL catalog on PostgreSQL.
func coordinatedCatalog(sf *sinkFlags) bool {
	return sf.catalog == "sql" &&
		(strings.HasPrefix(sf.catalogURI, "postgres://") || strings.HasPrefix(sf.catalogURI, "postgresql://"))
}

// registerMaintain adds --coordination to `lakehouse maintain`: there it
// only makes each table's pass take the maintenance lock of coordinated
// instances (no lease is taken).
func (c *coordFlags) registerMaintain(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, KeyCoordination, DefaultCoordination, "\"catalog\" when coordinated instances (serve --coordination catalog) use this catalog: each table's pass takes their maintenance lock, and a table one of them is maintaining is skipped (needs --catalog sql with a postgres:// --catalog-uri)")
}

// exclusiveMaintenance validates maintain's --coordination and tells
// whether its passes take the maintenance lock.
func (c *coordFlags) exclusiveMaintenance(sf *sinkFlags) (bool, error) {
	if err := c.validateMode(); err != nil || c.mode == DefaultCoordination {
		return false, err
	}
	if !coordinatedCatalog(sf) {
		return false, fmt.Errorf("--%s=catalog needs --catalog sql and a postgres:// --catalog-uri: the maintenance locks are in the catalog's PostgreSQL database", KeyCoordination)
	}
	return true, nil
}

// applySink sets the sink options of multi-instance mode, once the lease
// store is open.
func (c *coordFlags) applySink(sf *sinkFlags, leases *coord.Store, interval time.Duration) {
	sf.fenceIdleTx = c.ttl
	if c.electedCommitter() {
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
	return coord.Open(ctx, coord.Options{DSN: sf.catalogURI, Owner: id, Addr: addr, TTL: c.ttl, OrphanWait: c.orphanWait})
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
