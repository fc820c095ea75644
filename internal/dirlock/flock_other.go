//go:build !unix

package dirlock

import (
	"errors"
	"os"
)

// Without flock the directory is not protected; the LOCK file still names
// the last holder.
var errWouldBlock = errors.New("would block")

func lockFile(*os.File) error   { return nil }
func unlockFile(*os.File) error { return nil }
