package fetchtest

import (
	"net"
	"time"
)

// countingListener counts accepted connections and wraps each in a rateConn.
type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	l.s.stats.Connections++
	l.s.mu.Unlock()
	return &rateConn{Conn: c, s: l.s}, nil
}

// rateConn paces writes to the server's current per-connection rate, like a link of that
// bandwidth. The rate is read on every write, so SetConnRate applies to live connections.
// Only the connection's serving goroutine writes, so the pacing state needs no lock.
type rateConn struct {
	net.Conn
	s *Server

	rate   int64     // rate the pacing state below refers to
	start  time.Time // start of the pacing epoch
	budget int64     // bytes written in this epoch
}

// NetConn exposes the wrapped connection (for SetLinger on an injected reset).
func (c *rateConn) NetConn() net.Conn { return c.Conn }

func (c *rateConn) Write(p []byte) (int, error) {
	rate := c.s.connRate.Load()
	if rate <= 0 {
		c.rate = 0
		return c.Conn.Write(p)
	}
	if rate != c.rate || time.Since(c.start) > time.Second {
		// New rate, or idle for a while: start a new epoch (no burst credit for idle time
		// beyond one second, like a real link's queue).
		c.rate, c.start, c.budget = rate, time.Now(), 0
	}
	piece := max(int(rate/50), 1) // ~20 ms of data per write
	written := 0
	for written < len(p) {
		n := min(piece, len(p)-written)
		// Wait until the epoch allows budget+n bytes.
		due := c.start.Add(time.Duration((c.budget + int64(n)) * int64(time.Second) / rate))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.s.closing:
				t.Stop()
				return written, net.ErrClosed
			}
		}
		m, err := c.Conn.Write(p[written : written+n])
		written += m
		c.budget += int64(m)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}
