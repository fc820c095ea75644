// Package integration holds end-to-end tests that run the lakehouse binary
// as a separate process, with real sockets and files, and inject faults
// (kill -9, restarts) into it.
package integration
