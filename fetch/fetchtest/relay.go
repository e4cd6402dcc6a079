package fetchtest

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Relay is a loopback TCP proxy in front of a server: the client dials the Relay, which
// dials the target and forwards bytes both ways. Freeze makes the open connections go dead
// on the path (nothing forwarded, neither FIN nor RST), whatever protocol runs over them,
// TLS and HTTP/2 included; the server itself stays healthy and new connections work.
type Relay struct {
	l       net.Listener
	target  string
	closing chan struct{}
	wg      sync.WaitGroup

	mu       sync.Mutex
	conns    map[*relayConn]struct{}
	accepted int
	closed   bool
}

type relayConn struct {
	client, server net.Conn
	frozen         chan struct{} // closed by Freeze
	once           sync.Once
}

// NewRelay listens on 127.0.0.1:0 and forwards every accepted connection to target
// (host:port). It panics if it cannot listen, like NewServer.
func NewRelay(target string) *Relay {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("fetchtest: relay listen: %v", err))
	}
	r := &Relay{l: l, target: target, closing: make(chan struct{}), conns: map[*relayConn]struct{}{}}
	r.wg.Add(1)
	go r.serve()
	return r
}

// Addr is the relay's listening address (host:port): dial this instead of the target.
func (r *Relay) Addr() string { return r.l.Addr().String() }

// Accepted is the number of connections accepted so far (the client's dials).
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// Freeze makes every connection open now stop forwarding in both directions without being
// closed; bytes already forwarded stay delivered. It returns how many it froze.
func (r *Relay) Freeze() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.once.Do(func() { close(c.frozen) })
	}
	return len(r.conns)
}

// Close stops listening and closes every connection, frozen or not. Idempotent.
func (r *Relay) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.closing)
	r.l.Close()
	for c := range r.conns {
		c.client.Close()
		c.server.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) serve() {
	defer r.wg.Done()
	for {
		cl, err := r.l.Accept()
		if err != nil {
			return // closed
		}
		sv, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			cl.Close()
			continue
		}
		c := &relayConn{client: cl, server: sv, frozen: make(chan struct{})}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			cl.Close()
			sv.Close()
			return
		}
		r.accepted++
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(c, cl, sv)
		go r.pump(c, sv, cl)
	}
}

// pump copies src to dst until either side fails or c is frozen. A frozen pump holds the
// connection open, forwarding nothing, until the relay closes.
func (r *Relay) pump(c *relayConn, src, dst net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-c.frozen:
			<-r.closing
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			// One side ended: end the other, as a transparent proxy does.
			select {
			case <-c.frozen:
				<-r.closing
				return
			default:
			}
			src.Close()
			dst.Close()
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
			return
		}
	}
}
