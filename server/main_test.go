package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that servers stopped by the tests leave no goroutines
// behind (streams, reply pipelines, flusher, write-ahead log writer).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
