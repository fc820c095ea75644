package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

const selfRSSSupported = true

// selfRSS is this process's resident set size, from /proc/self/statm (its
// second field, in pages).
func selfRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("bench: /proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bench: /proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}
