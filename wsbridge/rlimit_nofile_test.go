//go:build linux || darwin

package wsbridge

import (
	"syscall"
	"testing"
)

func raiseNoFile(tb testing.TB, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	lim.Cur = min(max(want, lim.Cur), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatalf("raise RLIMIT_NOFILE: %v", err)
	}
	if lim.Cur < want {
		tb.Fatalf("RLIMIT_NOFILE hard limit %d < %d needed", lim.Max, want)
	}
}

// raiseNoFileToMax raises the soft open-file limit to the hard one.
func raiseNoFileToMax() {
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
