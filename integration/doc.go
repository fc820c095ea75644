// Package integration holds end-to-end tests that run the lakehouse binary
// as a separate process, with real sockets and files, and inject faults
// (kill -9, restarts, a full disk, network faults through
// internal/faultproxy, SIGSTOP). The fault harness (harness_*_test.go) runs
// lakehouse serve and a standalone bridge behind fault proxies with Go
// clients and legacy children on W1; the fault matrix
// (faultmatrix_test.go) drives it, quickly in every run and for a long,
// randomized run with LAKEHOUSE_FAULT_MATRIX=30m.
package integration
