package fetch

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"rangefs/fetch/fetchtest"
)

type onLoadKey struct{}

// With Options.OnLoad the caller decides the concurrency: 429 answers reach
// OnLoad, with the ctx given to Fetch, and the Client's own bound stays at
// Connections.
func TestOnLoadReportsOverloadInsteadOfLowering(t *testing.T) {
	s, p := newTestServer(t)
	opt := fastOptions()
	opt.Connections = 8
	opt.MaxAttempts = 64
	var overloads, successes atomic.Int64
	var foreign atomic.Int64
	opt.OnLoad = func(ctx context.Context, overloaded bool) {
		if ctx.Value(onLoadKey{}) == nil {
			foreign.Add(1)
		}
		if overloaded {
			overloads.Add(1)
		} else {
			successes.Add(1)
		}
	}
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	// The Probe's answer came with another ctx.
	foreign.Store(0)
	successes.Store(0)

	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 429, RetryAfter: "0", Times: 12, RangedOnly: true})
	const piece = 64 << 10
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			off := int64(i) * piece
			var buf bytes.Buffer
			ctx := context.WithValue(ctxT(t), onLoadKey{}, i)
			if err := o.Fetch(ctx, off, piece, &buf); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(buf.Bytes(), p.Bytes(off, piece)) {
				t.Errorf("wrong bytes at %d", off)
			}
		})
	}
	wg.Wait()
	if overloads.Load() != 12 || successes.Load() != 8 {
		t.Fatalf("OnLoad saw %d overloads and %d successes, want 12 and 8", overloads.Load(), successes.Load())
	}
	if foreign.Load() != 0 {
		t.Fatalf("%d reports came without the Fetch's ctx", foreign.Load())
	}
	if limit, _ := soleLimit(t, c).current(); limit != opt.Connections {
		t.Fatalf("the Client lowered its own limit to %d; with OnLoad it stays at %d", limit, opt.Connections)
	}
}
