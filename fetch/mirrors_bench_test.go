package fetch

import (
	"context"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// BenchmarkMirrorsCapped measures what a second mirror adds when every connection is
// capped by the server (a per-connection rate limit, as many public mirrors have): the
// same file through one mirror and through two, each with 2 connections capped at 4 MB/s,
// fetched in 1 MiB chunks by as many workers as there are connections. It reports both
// throughputs and their ratio (x_two_vs_one), without piece hashes and with 256 KiB pieces.
func BenchmarkMirrorsCapped(b *testing.B) {
	const size = 8 << 20
	p := fetchtest.Pattern(size, 31)
	b.Run("plain", func(b *testing.B) { benchMirrorsCapped(b, p, nil) })
	b.Run("pieces", func(b *testing.B) { benchMirrorsCapped(b, p, piecesOf(p, 256<<10)) })
}

func benchMirrorsCapped(b *testing.B, p *fetchtest.PatternReader, pieces *Pieces) {
	const chunk, perConn, conns = 1 << 20, 4 << 20, 2
	size := p.Size()
	opt := Options{Connections: conns}
	run := func(n int) float64 {
		c := newTestClient(b, opt)
		var objs []*Object
		for range n {
			s := fetchtest.NewServer(p, size, fetchtest.WithConnRate(perConn))
			b.Cleanup(s.Close)
			objs = append(objs, mustProbe(b, c, s.URL()))
		}
		ms, err := NewMirrors(objs, MirrorOptions{Pieces: pieces})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		got, err := fetchAll(ctx, b, ms.Fetch, size, chunk, conns*n)
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		checkBytes(b, got, p, 0)
		return float64(size) / d.Seconds() / 1e6
	}
	var one, two float64
	for b.Loop() {
		one += run(1)
		two += run(2)
	}
	b.ReportMetric(one/float64(b.N), "MB/s_one")
	b.ReportMetric(two/float64(b.N), "MB/s_two")
	b.ReportMetric(two/one, "x_two_vs_one")
}
