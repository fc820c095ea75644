//go:build !linux

package integration

import (
	"testing"
	"time"
)

func smallDisk(t *testing.T, size string) (dir, why string) {
	return "", "a fillable tmpfs needs Linux"
}

func fullDisk(t *testing.T, dir string, d time.Duration) {}
