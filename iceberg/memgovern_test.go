package iceberg

import (
	"context"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestSinkGovernsTheMemoryLimit: with Config.MemoryLimitFloor the sink holds
// the process's soft limit at the floor from Open (offheap.Budget.Govern
// raises it only under sustained collections), and sets MemoryLimit back
// when it closes, its goroutine ended. A floor above MemoryLimit is refused,
// naming the field.
func TestSinkGovernsTheMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const limit, floor = 1 << 30, 300 << 20
	debug.SetMemoryLimit(limit)
	s, err := Open(context.Background(), Config{DataDir: t.TempDir(), Logger: quietLogger(), MemoryLimit: limit, MemoryLimitFloor: floor})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); debug.SetMemoryLimit(-1) != floor; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			s.Close()
			t.Fatalf("runtime limit %d MiB after Open, want the floor %d MiB", debug.SetMemoryLimit(-1)>>20, floor>>20)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("runtime limit %d MiB after Close, want %d MiB back", got>>20, limit>>20)
	}
	_, err = Open(context.Background(), Config{DataDir: t.TempDir(), Logger: quietLogger(), MemoryLimit: limit, MemoryLimitFloor: 2 * limit})
	if err == nil || !strings.Contains(err.Error(), "MemoryLimitFloor") {
		t.Fatalf("a floor above the limit: %v, want an error naming MemoryLimitFloor", err)
	}
}
