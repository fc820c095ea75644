//go:build !linux && !darwin

package wsbridge

import "testing"

// raiseNoFile: there is no RLIMIT_NOFILE to raise here.
func raiseNoFile(tb testing.TB, want uint64) {
	tb.Skipf("needs RLIMIT_NOFILE (unix) for %d connections", want)
}

func raiseNoFileToMax() {}
