package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP relay in front of nginx that caps every connection's server-to-client
// rate and can add a round-trip delay, counting bytes and connections.
//
// Why not nginx's limit_rate: it applies per request, so a client that fetches many small
// ranges on one connection barely notices it. A cap per TCP connection is what a real
// network path with a per-flow bottleneck does, and it treats every client the same.
//
// A proxy is safe for concurrent use; SetRate and SetRTT apply to connections accepted
// afterwards. It is valid until Close, which closes every connection it relays.
type proxy struct {
	ln       net.Listener
	upstream string

	rate atomic.Int64 // bytes/s per connection; 0 = unlimited
	rtt  atomic.Int64 // round-trip delay in nanoseconds

	served   atomic.Int64 // bytes written to clients
	received atomic.Int64 // bytes written to the upstream
	conns    atomic.Int64 // connections accepted
	active   atomic.Int64 // connections open now

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// proxyStats is a snapshot of a proxy's counters; subtract two to get a row's share.
type proxyStats struct {
	Served, Received, Conns, Active int64
}

// proxyChunk is the largest slice forwarded at once. The pacer's burst is two of these,
// so a connection never runs ahead of its cap by more than 128 KiB.
const proxyChunk = 64 << 10

// newProxy listens on listenAddr (use 127.0.0.1:0) and relays to upstream.
func newProxy(listenAddr, upstream string, rate int64, rtt time.Duration) (*proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, upstream: upstream, open: make(map[net.Conn]struct{})}
	p.rate.Store(rate)
	p.rtt.Store(int64(rtt))
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the host:port clients connect to.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// SetRate changes the per-connection cap for connections accepted from now on.
func (p *proxy) SetRate(bytesPerSec int64) { p.rate.Store(bytesPerSec) }

// SetRTT changes the round-trip delay for connections accepted from now on.
func (p *proxy) SetRTT(d time.Duration) { p.rtt.Store(int64(d)) }

// Stats returns the counters now.
func (p *proxy) Stats() proxyStats {
	return proxyStats{
		Served:   p.served.Load(),
		Received: p.received.Load(),
		Conns:    p.conns.Load(),
		Active:   p.active.Load(),
	}
}

// WaitIdle waits until no connection is open or d has passed, and reports whether the
// proxy is idle. Rows call it so the counts include every byte of the finished tool.
func (p *proxy) WaitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.active.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Close stops accepting, closes every relayed connection and waits for the relays.
func (p *proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c so Close can reach it; it reports false (and closes c) once closed.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient accept errors (EMFILE and the like): back off briefly rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !p.track(c) {
			return
		}
		p.conns.Add(1)
		p.active.Add(1)
		p.wg.Add(1)
		go p.relay(c, time.Now(), p.rate.Load(), time.Duration(p.rtt.Load()))
	}
}

// relay copies both directions of one client connection until both are finished.
func (p *proxy) relay(client net.Conn, accepted time.Time, rate int64, rtt time.Duration) {
	defer p.wg.Done()
	defer p.active.Add(-1)
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	// A real path spends one round trip on the TCP handshake before the request can
	// leave, so the first upstream byte may not arrive before accepted+rtt+rtt/2.
	up := &pump{dst: server, src: client, count: &p.received, half: rtt / 2, notBefore: accepted.Add(rtt)}
	down := &pump{dst: client, src: server, count: &p.served, half: rtt / 2, pace: newPacer(rate, 2*proxyChunk)}
	done := make(chan struct{})
	go func() {
		up.run()
		close(done)
	}()
	down.run()
	<-done
}

// pump copies src to dst: each chunk is paced (if pace is set) when read, then delivered
// half a round trip later. When src ends, dst's write side is shut so the peer sees EOF;
// when a write fails, src is closed so the other direction stops too.
type pump struct {
	dst, src  net.Conn
	count     *atomic.Int64
	pace      *pacer
	half      time.Duration // one-way delay
	notBefore time.Time     // no delivery before this instant (the handshake round trip)
}

type timedChunk struct {
	b  []byte
	at time.Time // when it may be delivered
}

func (u *pump) run() {
	defer closeWrite(u.dst)
	if u.half == 0 && u.notBefore.IsZero() {
		u.direct()
		return
	}
	// Bounded delay line: at most 32 chunks (2 MiB) per direction per connection.
	line := make(chan timedChunk, 32)
	go func() {
		defer close(line)
		for {
			b := make([]byte, proxyChunk)
			n, err := u.src.Read(b)
			if n > 0 {
				u.pace.wait(n)
				at := time.Now().Add(u.half)
				if at.Before(u.notBefore.Add(u.half)) {
					at = u.notBefore.Add(u.half)
				}
				line <- timedChunk{b[:n], at}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range line {
		if failed {
			continue // drain so the reader goroutine can finish
		}
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		n, err := u.dst.Write(c.b)
		u.count.Add(int64(n))
		if err != nil {
			failed = true
			u.src.Close()
		}
	}
}

// direct is run without a delay: read, pace, write, in one goroutine.
func (u *pump) direct() {
	b := make([]byte, proxyChunk)
	for {
		n, err := u.src.Read(b)
		if n > 0 {
			u.pace.wait(n)
			w, werr := u.dst.Write(b[:n])
			u.count.Add(int64(w))
			if werr != nil {
				u.src.Close()
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				u.src.Close()
			}
			return
		}
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
		return
	}
	c.Close()
}

// pacer is a token bucket: tokens accrue at rate bytes/s up to burst, a chunk takes its
// size in tokens, and a deficit is slept off. Oversleeping is harmless because refill uses
// the real elapsed time, so the long-run rate is exact. A nil pacer or rate 0 never waits.
// Not safe for concurrent use: one per connection direction.
type pacer struct {
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time    // replaced in tests by a fake clock
	sleep  func(time.Duration) // likewise
}

func newPacer(rate int64, burst int) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{rate: float64(rate), burst: float64(burst), tokens: float64(burst), now: time.Now, sleep: time.Sleep}
}

// wait blocks until n more bytes fit under the cap.
func (p *pacer) wait(n int) {
	if p == nil {
		return
	}
	now := p.now()
	if !p.last.IsZero() {
		p.tokens += now.Sub(p.last).Seconds() * p.rate
		if p.tokens > p.burst {
			p.tokens = p.burst
		}
	}
	p.last = now
	p.tokens -= float64(n)
	if p.tokens < 0 {
		p.sleep(time.Duration(-p.tokens / p.rate * float64(time.Second)))
	}
}
