package fetch

import (
	"context"
	"io"
	"sync"
	"testing"

	"rangefs/fetch/fetchtest"
)

const benchSize = 64 << 20

// BenchmarkFetch fetches a 64 MiB object over loopback into io.Discard with one ranged GET
// per iteration; b.SetBytes makes `go test -bench` report MB/s.
func BenchmarkFetch(b *testing.B) {
	s := fetchtest.NewServer(fetchtest.Pattern(benchSize, 1), benchSize)
	defer s.Close()
	c := NewClient(Options{})
	defer c.Close()
	o, err := c.Probe(context.Background(), s.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		if err := o.Fetch(context.Background(), 0, benchSize, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchParallel splits the same 64 MiB into 4 concurrent 16 MiB ranges, the way
// `rangefs get` keeps several connections busy.
func BenchmarkFetchParallel(b *testing.B) {
	const parts = 4
	s := fetchtest.NewServer(fetchtest.Pattern(benchSize, 1), benchSize)
	defer s.Close()
	c := NewClient(Options{Connections: parts})
	defer c.Close()
	o, err := c.Probe(context.Background(), s.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make([]error, parts)
		for i := range parts {
			wg.Go(func() {
				errs[i] = o.Fetch(context.Background(), int64(i)*benchSize/parts, benchSize/parts, io.Discard)
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
