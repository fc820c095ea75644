//go:build unix

package integration

import (
	"os"
	"testing"
)

// TestMain removes the programs the tests built (about 150 MB a run, which
// filled a developer machine's disk over many runs).
func TestMain(m *testing.M) {
	code := m.Run()
	lakehouseBuild.remove()
	s3serverBuild.remove()
	os.Exit(code)
}
