package integration

// pausedStoreScenario returns the matrix's "paused object store" scenario:
// an S3-compatible server process as the warehouse (its launcher belongs in
// integration/s3proc_test.go), paused with SIGSTOP during an episode. Its
// setup adds the warehouse flags and credentials to the cluster's
// configuration (and skips when the S3 server is not installed); its inject
// pauses the store for longer than --commit-timeout and continues it.
//
// Its kind is kindStore (the long run draws it as often as a full disk).
//
// Until that launcher exists ok is false and the matrix reports the
// scenario as not run.
func pausedStoreScenario() (s faultScenario, ok bool) {
	return faultScenario{}, false
}
