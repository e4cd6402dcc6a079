package main

import (
	"context"
	"fmt"
	"strconv"

	"rangefs/cmd/internal/bytesize"
)

// budgetLimit is the cache budget of the bounded row: a sixteenth of the
// file (256 MiB for the 4 GiB run the issue asks for), at least 16 MiB.
func budgetLimit(size int64) int64 { return max(16<<20, size/16) }

// budgetRows are the bounded-cache rows: the same cold sequential read of the
// file through the capped server, first with an unbounded cache, then with
// --cache-max-size, in the same run; the bounded row's note gives the
// throughput ratio and both peak RSS figures.
func budgetRows(cfg config) []row {
	const startup = 2e9
	est := 2*secondsAt(cfg.size, 300e6) + 4*startup
	return []row{{id: "budget-mount-rangefs", tools: []string{"rangefs"}, est: est,
		run: func(ctx context.Context, b *bench) []result {
			limit := budgetLimit(b.data.size)
			free := rangefsMount()
			free.id, free.label = "budget-unbounded", "rangefs mount -j8, unbounded cache"
			bounded := rangefsMount()
			bounded.id = "budget-bounded"
			bounded.label = "rangefs mount -j8 --cache-max-size " + bytesize.Format(limit)
			argv := bounded.argv
			bounded.argv = func(url, mnt, cache string, noPrefetch bool) []string {
				a := argv(url, mnt, cache, noPrefetch)
				return append([]string{a[0], a[1], "--cache-max-size", strconv.FormatInt(limit, 10)}, a[2:]...)
			}
			out := b.mountRows(ctx, free, secMountCold, false, false, false)
			if ctx.Err() != nil {
				return out
			}
			bout := b.mountRows(ctx, bounded, secMountCold, false, false, false)
			if len(out) > 0 && len(bout) > 0 {
				u, bd := out[0], &bout[0]
				if u.MBps() > 0 && bd.MBps() > 0 {
					bd.Note = joinNote(bd.Note, fmt.Sprintf("%.2fx the unbounded row's throughput; peak RSS %d KiB vs %d KiB",
						bd.MBps()/u.MBps(), bd.RSSKiB, u.RSSKiB))
				}
			}
			return append(out, bout...)
		}}}
}
