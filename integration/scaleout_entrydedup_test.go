//go:build unix

package integration

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestScaleOutLegacyResendAfterMove: a legacy child streams through a's
// built-in bridge; a commits its entries and records the committed mark,
// but the child never sees the acks (lost on the way); a is killed. The
// child, reconnected through b's bridge, sends the same entries again: b
// answers duplicate (the lease row's committed ranges seed its dedup
// window), stores the new entries after them, and every entry is stored
// once. Before the ranges, b's window started empty and stored them twice.
// (The simulated child does not reconnect, so a second one with the same
// source and entries stands for it; the server ignores IS_RETRY.)
func TestScaleOutLegacyResendAfterMove(t *testing.T) {
	so := newScaleOut(t)
	httpA, httpB := freeAddr(t), freeAddr(t)
	a, _ := so.start("a", "--flush-interval", "1s", "--http-addr", httpA)
	b, _ := so.start("b", "--flush-interval", "1s", "--http-addr", httpB)
	const id, batch, batches, more = "legacy-resend", 100, 2, 50
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	entries := func(first uint64, n int) []codec.Entry { return workload.Entries(int64(first-1), int64(n)) }
	db, err := sql.Open("pgx", so.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// waitRow polls the source's lease row until cond holds.
	waitRow := func(what, cond string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; {
			var ok bool
			err := db.QueryRowContext(ctx, `SELECT `+cond+` FROM lakehouse_source_leases WHERE source_id = $1`, id).Scan(&ok)
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v\n%s", what, err, so.logs("a", "b"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	first := &legacychild.Child{Source: id, AckTimeout: time.Minute, Entries: entries,
		LoseAck: func(uint64) bool { return true }}
	if err := first.Start(ctx, "ws://"+httpA+"/cdc"); err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for range batches {
		first.SendEntries(batch)
	}
	waitRow("a's committed mark", `COALESCE(committed_entry, 0) >= 200`)
	a.kill()
	first.Close()
	waitRow("a's lease to expire", `expires_at < now()`)

	second := &legacychild.Child{Source: id, AckTimeout: 10 * time.Second, MaxRetries: 100, Entries: entries}
	if err := second.Start(ctx, "ws://"+httpB+"/cdc"); err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	for range batches {
		second.SendEntries(batch)
	}
	second.SendEntries(more)
	st, err := second.WaitIdle(time.Minute)
	if err != nil {
		t.Fatalf("child through b: %v\n%s", err, so.logs("a", "b"))
	}
	if st.Duplicates != batches || st.Failed != 0 {
		t.Errorf("child through b: %d duplicate acks, %d failed, want %d and 0", st.Duplicates, st.Failed, batches)
	}
	second.Close()
	if err := b.stop(30 * time.Second); err != nil {
		t.Fatalf("stop b: %v\n%s", err, so.logs("a", "b"))
	}
	counts := make(map[uint64]int)
	for _, r := range so.read() {
		if r.source == id {
			counts[r.entry]++
		}
	}
	var wrong []uint64
	for q := uint64(1); q <= batch*batches+more; q++ {
		if counts[q] != 1 {
			wrong = append(wrong, q)
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d entries not stored once, entry %d %d times", len(wrong), wrong[0], counts[wrong[0]])
	}
	if len(counts) != batch*batches+more {
		t.Errorf("%d distinct entries stored, want %d", len(counts), batch*batches+more)
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}
