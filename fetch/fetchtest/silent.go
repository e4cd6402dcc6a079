package fetchtest

import (
	"net"
	"sync"
)

// SilentServer is a TCP listener on 127.0.0.1 that accepts connections and never reads or
// writes: a hung server, for plain HTTP (no response header ever) and for TLS (the handshake
// never completes). Safe for concurrent use; Close closes the listener and every accepted
// connection.
type SilentServer struct {
	l        net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	accepted int
	done     chan struct{}
}

// NewSilentServer starts a silent server; it panics if it cannot listen (like httptest).
func NewSilentServer() *SilentServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("fetchtest: listen: " + err.Error())
	}
	b := &SilentServer{l: l, done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *SilentServer) loop() {
	defer close(b.done)
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.accepted++
		b.mu.Unlock()
	}
}

// Addr is host:port.
func (b *SilentServer) Addr() string { return b.l.Addr().String() }

// URL is scheme://host:port/path.
func (b *SilentServer) URL(scheme, path string) string { return scheme + "://" + b.Addr() + path }

// Accepted is the number of connections accepted so far.
func (b *SilentServer) Accepted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

// Close stops accepting and closes every connection. Idempotent.
func (b *SilentServer) Close() {
	b.l.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}
