//go:build unix

package integration

import (
	"testing"
	"time"
)

// pausedStoreScenario is the matrix's "paused object store" scenario: the
// warehouse is on an S3-compatible server process (s3proc_test.go:
// SeaweedFS, or the gofakes3 fallback), paused with SIGSTOP for longer than
// --commit-timeout during an episode, then continued. Flushes must fail
// within the timeout, batches be acked fallback and wait in the log, and the
// recovery loop commit them after the resume.
func pausedStoreScenario() (s faultScenario, ok bool) {
	const commitTimeout = 3 * time.Second
	var s3 *s3Proc
	return faultScenario{
		name: "store-pause",
		kind: kindStore,
		setup: func(t *testing.T, cfg *clusterConfig) string {
			s3 = startS3(t) // killed after the cluster: registered first
			s3.CreateBucket(t, "lake")
			cfg.serveArgs = append(cfg.serveArgs, "--warehouse", "s3://lake/wh", "--catalog-props", s3.CatalogProps(),
				"--commit-timeout", commitTimeout.String())
			cfg.env = append(cfg.env, s3.Env()...)
			cfg.storeProps = s3.Props()
			return ""
		},
		inject: func(fr *faultRun) (string, int) {
			d := 3 * commitTimeout
			if fr.long {
				d = fr.between(commitTimeout, 8*commitTimeout)
			}
			s3.Pause(fr.t)
			time.Sleep(d)
			s3.Resume(fr.t)
			return "object store SIGSTOP for " + d.String(), 1
		},
	}, true
}
