package server

import (
	"errors"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestRecoverySchedule: retries of a failing commit start at the initial
// delay and double up to the maximum, which also bounds how long after an
// outage the backlog waits; an initial delay above the maximum is the
// maximum (--recovery-max-delay below 1 s).
func TestRecoverySchedule(t *testing.T) {
	now := time.Unix(0, 0)
	for _, c := range []struct {
		initial, max time.Duration
		want         []time.Duration
	}{
		{0, 0, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}},
		{0, 5 * time.Second, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{0, 300 * time.Millisecond, []time.Duration{300 * time.Millisecond, 300 * time.Millisecond}},
	} {
		cfg := Config{DataDir: t.TempDir(), Sink: struct{ sink.Sink }{}, RecoveryInitialDelay: c.initial, RecoveryMaxDelay: c.max}
		if err := cfg.setDefaults(); err != nil {
			t.Fatal(err)
		}
		r := newRecoveryState(&cfg)
		for i, want := range c.want {
			if got := r.failed(errors.New("store down"), now); got != want {
				t.Errorf("initial %v, max %v: retry %d after %v, want %v", c.initial, c.max, i+1, got, want)
			}
		}
	}
}
