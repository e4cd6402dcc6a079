package fetch

import (
	"io"
	"net/http"
	"strings"
)

// Observer receives a count of what a Client does, for metrics. Its methods
// are called on the request path, concurrently: they must be cheap and
// safe for concurrent use.
type Observer interface {
	// Response is called once per HTTP response received, whatever its status.
	Response(code int)
	// TransportError is called once per attempt that got no response at all
	// (refused, reset, timed out, TLS failure).
	TransportError()
	// Retry is called once per retry the Client decides on; op names the
	// call ("probe", "fetch", "stream").
	Retry(op string)
	// BodyBytes is called as response body bytes arrive (error pages
	// included), with how many.
	BodyBytes(n int64)
}

// HostLimit is the adaptive concurrency bound towards one host.
type HostLimit struct {
	Host     string
	Limit    int // requests allowed in flight now (lowered while the server sheds load)
	InFlight int // requests in flight now
}

// Limits reports the adaptive limit of every host this Client has sent to.
func (c *Client) Limits() []HostLimit {
	c.limitsMu.Lock()
	defer c.limitsMu.Unlock()
	var out []HostLimit
	for host, l := range c.limits {
		lim, n := l.current()
		out = append(out, HostLimit{Host: strings.ToLower(host), Limit: lim, InFlight: n})
	}
	return out
}

// observe tells the Observer about one attempt's outcome.
func (c *Client) observe(resp *http.Response, err error) {
	switch o := c.o.Observer; {
	case o == nil:
	case err != nil:
		o.TransportError()
	default:
		o.Response(resp.StatusCode)
	}
}

// countBody reports the bytes read from body to the Observer.
func (c *Client) countBody(body io.ReadCloser) io.ReadCloser {
	if c.o.Observer == nil {
		return body
	}
	return &countedBody{ReadCloser: body, o: c.o.Observer}
}

type countedBody struct {
	io.ReadCloser
	o Observer
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.o.BodyBytes(int64(n))
	}
	return n, err
}
