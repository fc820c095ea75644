//go:build !unix

package iceberg

import "time"

// processCPU is not measured here.
func processCPU() time.Duration { return 0 }
