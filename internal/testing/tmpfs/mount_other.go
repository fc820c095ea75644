//go:build !linux

package tmpfs

import (
	"errors"
	"testing"
)

// Mount needs Linux.
func Mount(t testing.TB, size string) (string, error) {
	return "", errors.New("a tmpfs to fill needs Linux")
}
