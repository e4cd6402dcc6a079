package main

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/content"
)

// fakeClock drives a pacer without real sleeping: sleep advances now.
type fakeClock struct {
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(d time.Duration) {
	c.t = c.t.Add(d)
	c.slept += d
}

func TestPacerMath(t *testing.T) {
	const rate = 1 << 20 // 1 MiB/s
	const burst = 128 << 10
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := newPacer(rate, burst)
	p.now, p.sleep = clk.now, clk.sleep
	const total = 10 << 20
	for sent := 0; sent < total; sent += 64 << 10 {
		p.wait(64 << 10)
	}
	// A fresh bucket holds one burst; the rest must take exactly (total-burst)/rate.
	want := time.Duration(float64(total-burst) / rate * float64(time.Second))
	if d := clk.t.Sub(time.Unix(1000, 0)) - want; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("10 MiB at 1 MiB/s took %v of virtual time, want %v", clk.t.Sub(time.Unix(1000, 0)), want)
	}

	// An idle gap refills at most one burst: a long pause does not buy a long full-speed run.
	clk.t = clk.t.Add(time.Hour)
	before := clk.slept
	for sent := 0; sent < 1<<20; sent += 64 << 10 {
		p.wait(64 << 10)
	}
	want = time.Duration(float64(1<<20-burst) / rate * float64(time.Second))
	if got := clk.slept - before; got < want-time.Millisecond || got > want+time.Millisecond {
		t.Errorf("after an idle hour, 1 MiB slept %v, want %v", got, want)
	}

	// Oversleeping is paid back: if each sleep overshoots, later chunks wait less, so the
	// long-run rate stays exact.
	clk2 := &fakeClock{t: time.Unix(0, 0)}
	q := newPacer(rate, burst)
	q.now = clk2.now
	q.sleep = func(d time.Duration) { clk2.sleep(d + 2*time.Millisecond) }
	for sent := 0; sent < total; sent += 64 << 10 {
		q.wait(64 << 10)
	}
	want = time.Duration(float64(total-burst) / rate * float64(time.Second))
	if got := clk2.t.Sub(time.Unix(0, 0)); got < want || got > want+3*time.Millisecond {
		t.Errorf("with 2 ms oversleep per chunk, 10 MiB took %v, want about %v", got, want)
	}

	if newPacer(0, burst) != nil {
		t.Error("rate 0 must mean no pacer")
	}
	var none *pacer
	none.wait(1 << 30) // must not block or panic
}

// sinkServer serves payload to each connection after reading a one-line request, then
// closes. It stops when the test ends.
func sinkServer(t *testing.T, payload []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				buf := make([]byte, 1)
				for buf[0] != '\n' { // the request line
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
				c.Write(payload)
			}()
		}
	}()
	return ln.Addr().String()
}

// fetchThrough sends a request line through the proxy and returns what came back and
// when the first byte arrived.
func fetchThrough(t *testing.T, addr string) ([]byte, time.Duration, time.Duration) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("GET\n")); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatal(err)
	}
	ttfb := time.Since(start)
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return append(first, rest...), ttfb, time.Since(start)
}

func TestProxyCapsRateAndCounts(t *testing.T) {
	payload := make([]byte, 3_000_000)
	content.Fill(payload, 0, 7)
	up := sinkServer(t, payload)
	const rate = 10_000_000 // 10 MB/s
	p, err := newProxy("127.0.0.1:0", up, rate, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	got, _, took := fetchThrough(t, p.Addr())
	if !bytes.Equal(got, payload) {
		t.Fatalf("relayed %d bytes, not the %d sent", len(got), len(payload))
	}
	// Lower bound only: a capped connection cannot beat (payload - burst)/rate. A slow
	// machine only makes it slower, so this cannot flake; an uncapped relay on loopback
	// would finish in a few milliseconds and fail it.
	minTook := time.Duration(float64(len(payload)-2*proxyChunk) / rate * float64(time.Second))
	if took < minTook {
		t.Errorf("3 MB through a 10 MB/s cap took %v, faster than the cap allows (%v)", took, minTook)
	}
	if !p.WaitIdle(5 * time.Second) {
		t.Fatal("proxy still has an open connection after the client finished")
	}
	st := p.Stats()
	if st.Served != int64(len(payload)) || st.Received != 4 || st.Conns != 1 || st.Active != 0 {
		t.Errorf("stats = %+v, want served %d, received 4, 1 connection, 0 active", st, len(payload))
	}

	// The cap is per connection: two at once each get the full rate, so together they
	// finish in about the time of one (checked loosely: well under the serial time).
	p.SetRate(rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write([]byte("GET\n"))
			n, _ := io.Copy(io.Discard, c)
			if n != int64(len(payload)) {
				t.Errorf("parallel client got %d bytes", n)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took < minTook {
		t.Errorf("two parallel capped connections finished in %v, under one connection's minimum %v", took, minTook)
	}
	p.WaitIdle(5 * time.Second)
	if st := p.Stats(); st.Conns != 3 || st.Served != 3*int64(len(payload)) {
		t.Errorf("after 3 connections stats = %+v", st)
	}
}

func TestProxyUncappedAndRTT(t *testing.T) {
	payload := make([]byte, 200_000)
	content.Fill(payload, 0, 9)
	up := sinkServer(t, payload)
	p, err := newProxy("127.0.0.1:0", up, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got, _, _ := fetchThrough(t, p.Addr())
	if !bytes.Equal(got, payload) {
		t.Fatal("uncapped relay corrupted the payload")
	}

	const rtt = 80 * time.Millisecond
	p.SetRTT(rtt)
	got, ttfb, _ := fetchThrough(t, p.Addr())
	if !bytes.Equal(got, payload) {
		t.Fatal("delayed relay corrupted the payload")
	}
	// Handshake round trip plus request and response half trips: at least two RTTs.
	if ttfb < 2*rtt {
		t.Errorf("first byte after %v, want at least %v with rtt %v", ttfb, 2*rtt, rtt)
	}
	if !p.WaitIdle(5 * time.Second) {
		t.Error("delayed connection did not finish")
	}
}

func TestProxyCloseEndsOpenConnections(t *testing.T) {
	// An upstream that accepts and never answers: the relay would wait forever.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c
		}
	}()
	p, err := newProxy("127.0.0.1:0", ln.Addr().String(), 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case u := <-held:
		defer u.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("proxy never dialled upstream")
	}
	done := make(chan struct{})
	go func() {
		p.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a connection open")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after Close")
	}
}
