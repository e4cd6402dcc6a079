package fetchtest

import (
	"net"
	"sync"
	"sync/atomic"
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
	rc := &rateConn{Conn: c, s: l.s, closed: make(chan struct{})}
	l.s.mu.Lock()
	l.s.stats.Connections++
	l.s.conns[rc] = struct{}{}
	l.s.mu.Unlock()
	return rc, nil
}

// rateConn paces writes to the server's current per-connection rate, like a link of that
// bandwidth. The rate is read on every write, so SetConnRate applies to live connections.
// Only the connection's serving goroutine writes, so the pacing state needs no lock.
// A frozen connection (FreezeConnections) moves no byte in either direction until it is
// closed.
type rateConn struct {
	net.Conn
	s *Server

	frozen    atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once

	rate   int64     // rate the pacing state below refers to
	start  time.Time // start of the pacing epoch
	budget int64     // bytes written in this epoch
}

// NetConn exposes the wrapped connection (for SetLinger on an injected reset).
func (c *rateConn) NetConn() net.Conn { return c.Conn }

// Close closes the connection, ends a frozen wait and forgets the connection.
func (c *rateConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// dead blocks a frozen connection's Read or Write until the connection or the server is
// closed: what a peer sees of a path that died without FIN or RST.
func (c *rateConn) dead() error {
	select {
	case <-c.closed:
	case <-c.s.closing:
	}
	return net.ErrClosed
}

func (c *rateConn) Read(p []byte) (int, error) {
	if c.frozen.Load() {
		return 0, c.dead()
	}
	n, err := c.Conn.Read(p)
	if c.frozen.Load() {
		// Frozen while the read was waiting: the bytes are lost on the dead path.
		return 0, c.dead()
	}
	return n, err
}

func (c *rateConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return 0, c.dead()
	}
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
		if c.frozen.Load() {
			return written, c.dead()
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
