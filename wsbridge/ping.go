package wsbridge

import (
	"context"
	"time"
)

// WebSocket keepalive: a child whose host vanished or whose link stalled
// sends no close and no FIN, so without pings its connection (and its
// upstream stream) would stay open until the kernel gives up, hours later.
// The bridge sends a WebSocket ping control frame to each child every
// Config.PingInterval and closes the connection when the pong does not come
// within Config.PingTimeout. Every WebSocket implementation answers pings
// by itself (RFC 6455 5.5.2), so legacy children need no change, and none
// of their data frames changes.
//
// The pong is read by the connection's reading goroutine, so a ping sent
// while that goroutine is busy with a message (forwarding it upstream may
// wait on a slow server) proves nothing: such a ping is not held against
// the child, and the next one decides.
//
// The ping runs in a timer's goroutine, only while it is due: an idle
// connection keeps no extra parked goroutine.

// armPing schedules the next ping.
func (c *conn) armPing() {
	if c.b.cfg.PingInterval <= 0 || c.ended.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pingTimer == nil {
		c.pingTimer = time.AfterFunc(c.b.cfg.PingInterval, c.ping)
		return
	}
	c.pingTimer.Reset(c.b.cfg.PingInterval)
}

// stopPing stops the pings when the connection ends.
func (c *conn) stopPing() {
	c.ended.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
}

// ping sends one ping and closes the connection if it goes unanswered while
// the reader was free to read the pong.
func (c *conn) ping() {
	if !c.b.track() {
		return
	}
	defer c.b.wg.Done()
	if c.ended.Load() {
		return
	}
	if c.busy.Load() {
		c.armPing()
		return
	}
	handled := c.handled.Load()
	ctx, cancel := context.WithTimeout(c.b.ctx, c.b.cfg.PingTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	switch {
	case err == nil:
		c.armPing()
		return
	case c.ended.Load() || c.b.ctx.Err() != nil:
		return
	case c.busy.Load() || c.handled.Load() != handled:
		c.armPing() // inconclusive: the reader was busy, or the child spoke
		return
	}
	c.b.pingTimeouts.Add(1)
	c.b.log.Info("legacy child did not answer a ping; closing its connection",
		"remote", c.remote, "source", c.source, "timeout", c.b.cfg.PingTimeout, "err", err)
	c.closing.Store(true)
	_ = c.ws.CloseNow()
}

// track adds a goroutine that is already running to the ones Close waits
// for; false when the bridge is closed.
func (b *Bridge) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

// PingTimeouts returns the number of connections closed because their
// child did not answer a ping.
func (b *Bridge) PingTimeouts() int64 { return b.pingTimeouts.Load() }
