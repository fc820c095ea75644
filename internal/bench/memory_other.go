//go:build !linux

package bench

import "errors"

const selfRSSSupported = false

func selfRSS() (int64, error) { return 0, errors.New("bench: the process's RSS is read on Linux only") }
