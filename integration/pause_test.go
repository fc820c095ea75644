//go:build unix

package integration

import (
	"context"
	"os"
	"testing"
	"time"
)

// pauseLongEnv makes TestServerPause pause the server for 30 s instead of a
// few seconds.
const pauseLongEnv = "LAKEHOUSE_PAUSE_LONG"

// TestServerPause stops lakehouse serve with SIGSTOP while Go clients and
// legacy children (through the standalone bridge) stream W1, then continues
// it with SIGCONT. The clients' ack timeouts fire during the pause, they
// reconnect, and at the end every acked entry is stored exactly once. The CI
// variant pauses for 4 s with a 1.5 s ack timeout; LAKEHOUSE_PAUSE_LONG=1
// pauses for 30 s, past the keepalives too.
func TestServerPause(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	pause, ackTimeout := 4*time.Second, 1500*time.Millisecond
	if os.Getenv(pauseLongEnv) != "" {
		pause, ackTimeout = 30*time.Second, 5*time.Second
	}
	c := newCluster(t, clusterConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := startLoad(ctx, loadConfig{prefix: "pause", native: 2, legacy: 2, batchSize: 50, batches: 200,
		window: 4, ackTimeout: ackTimeout}, c.native.Addr(), c.bridgeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	for l.progress() < 2000 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	reconnectsBefore := l.reconnects()
	t.Logf("SIGSTOP for %v with %d entries acked", pause, l.progress())
	c.pause(pause)
	res := &scenarioResult{name: "pause " + pause.String(), faults: 1}
	res.recover = l.waitProgress(ctx, time.Now())
	t.Logf("SIGCONT; progress again after %v", res.recover.Round(time.Millisecond))
	if err := l.wait(ctx); err != nil {
		t.Fatalf("%v\n%s", err, readLog(t, c.logPath))
	}
	if l.reconnects() == reconnectsBefore {
		t.Errorf("no Go client reconnected during a %v pause with a %v ack timeout", pause, ackTimeout)
	}
	var timedOut int
	for _, s := range l.legacy {
		timedOut += s.child.Stats().TimedOut
	}
	t.Logf("Go client reconnects %d; legacy batches timed out and resent %d", l.reconnects()-reconnectsBefore, timedOut)
	l.close()
	if err := c.drain(2 * time.Minute); err != nil {
		t.Error(err)
	}
	c.stop()
	res.add(l, storedCounts(readIceberg(t, c.dataDir, "")))
	res.peakKB = c.peakKB.Load()
	res.check(t)
	t.Logf("server pause:\n%s", report([]*scenarioResult{res}))
}
