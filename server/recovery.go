package server

import "time"

// recoveryState is the schedule of retries after failed flushes (the sink or
// its catalog failing). Guarded by Server.mu; only the flusher changes it.
type recoveryState struct {
	retries           int           // attempts per round (Config.RecoveryRetries)
	initial, maxDelay time.Duration // first delay, doubling up to maxDelay
	active            bool
	attempt           int // attempts in the current round
	lastError         string
	nextRetry         time.Time
}

func newRecoveryState(cfg *Config) recoveryState {
	return recoveryState{retries: cfg.RecoveryRetries, initial: cfg.RecoveryInitialDelay, maxDelay: cfg.RecoveryMaxDelay}
}

// failed records a failed flush and schedules the next try: the initial
// delay doubling up to the maximum, retries per round; after a round the
// delay restarts at the maximum, forever, because giving up would mean
// dropping acknowledged data. It returns the delay.
func (r *recoveryState) failed(err error, now time.Time) time.Duration {
	r.active = true
	r.lastError = err.Error()
	r.attempt++
	var delay time.Duration
	if r.attempt > r.retries {
		r.attempt = 1
		delay = r.maxDelay
	} else {
		delay = r.initial << (r.attempt - 1)
		if delay > r.maxDelay || delay <= 0 {
			delay = r.maxDelay
		}
	}
	r.nextRetry = now.Add(delay)
	return delay
}

// succeeded ends the recovery after a successful flush; it reports whether
// one was active and how many attempts its round had taken.
func (r *recoveryState) succeeded() (wasActive bool, attempts int) {
	wasActive, attempts = r.active, r.attempt
	r.active, r.attempt, r.lastError, r.nextRetry = false, 0, "", time.Time{}
	return wasActive, attempts
}

// inBackoff reports whether a retry is scheduled after now.
func (r *recoveryState) inBackoff(now time.Time) bool {
	return r.active && now.Before(r.nextRetry)
}

// due reports whether a scheduled retry is due at now.
func (r *recoveryState) due(now time.Time) bool {
	return r.active && !now.Before(r.nextRetry)
}

// walFault is the state of a write-ahead log failure and its recovery.
// Guarded by Server.mu.
type walFault struct {
	down      bool      // the log failed; batches are refused until it recovers
	gen       uint64    // failures seen; a reply judged before one is not trusted after it
	since     time.Time // when the current failure was seen
	attempts  int       // failed recovery probes of the current failure
	nextProbe time.Time
}
