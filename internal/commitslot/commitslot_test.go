package commitslot

import (
	"testing"
	"time"
)

func TestSlots(t *testing.T) {
	iv := 10 * time.Second
	at := time.Date(2026, 11, 28, 12, 0, 7, 500, time.UTC)
	if got, want := Start(at, iv), time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Start = %v, want %v", got, want)
	}
	if got, want := Next(at, iv), time.Date(2026, 11, 28, 12, 0, 10, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Next = %v, want %v", got, want)
	}
	// A slot's start belongs to it; the instant before, to the previous.
	b := Start(at, iv)
	if Of(b, iv) != Of(at, iv) || Of(b.Add(-time.Nanosecond), iv) != Of(at, iv)-1 {
		t.Errorf("slot boundaries: Of(start)=%d Of(at)=%d Of(start-1ns)=%d", Of(b, iv), Of(at, iv), Of(b.Add(-time.Nanosecond), iv))
	}
	// Next is strictly after t, also at a slot's start.
	if got := Next(b, iv); !got.Equal(b.Add(iv)) {
		t.Errorf("Next(start) = %v, want %v", got, b.Add(iv))
	}
	// Intervals that do not divide a day still align to Unix time, the
	// same on every instance.
	seven := 7 * time.Second
	if s := Start(at, seven); s.UnixNano()%int64(seven) != 0 || at.Sub(s) >= seven || at.Before(s) {
		t.Errorf("Start(7s) = %v, not a multiple of 7 s of Unix time at or before %v", s, at)
	}
	// A zero time.Time (never) is before every slot since 1970.
	var zero time.Time
	if Of(zero, iv) >= Of(time.Unix(0, 0), iv) {
		t.Errorf("Of(zero) = %d, not before slot %d", Of(zero, iv), Of(time.Unix(0, 0), iv))
	}
	if Gather(time.Second) != 250*time.Millisecond || Gather(30*time.Second) != MaxGather {
		t.Errorf("Gather: %v %v", Gather(time.Second), Gather(30*time.Second))
	}
}
