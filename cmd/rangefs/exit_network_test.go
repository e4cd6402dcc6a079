package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"rangefs/fetch"
	"rangefs/fetch/fetchtest"
)

// A transfer that fetch gives up on because the server stalled, or kept
// cutting bodies short, is the network's failure: exit 3, like a refused
// connection, not the catch-all 1.
func TestExitCodeOfFetchGiveUps(t *testing.T) {
	live := context.Background()
	client := fetch.NewClient(fetch.Options{MaxAttempts: 2, StallTimeout: 100 * time.Millisecond,
		RetryBase: time.Millisecond, RetryCap: time.Millisecond})
	defer client.Close()
	for _, tc := range []struct {
		name  string
		fault fetchtest.Fault
	}{
		{"stalled body", fetchtest.Fault{Kind: fetchtest.Stall, Arg: 1000, RangedOnly: true}},
		{"body always short", fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 0, RangedOnly: true}},
	} {
		s, _ := patternServer(t, 1<<20, 47)
		o, err := client.Probe(live, s.URL())
		if err != nil {
			t.Fatal(err)
		}
		s.Inject(tc.fault)
		err = o.Fetch(live, 0, 1<<20, io.Discard)
		if err == nil {
			t.Fatalf("%s: Fetch succeeded, so the case proves nothing", tc.name)
		}
		if got := exitCode(live, fmt.Errorf("wrapped: %w", err)); got != exitNetwork {
			t.Errorf("%s: exitCode = %d, want %d (error: %v)", tc.name, got, exitNetwork, err)
		}
		if !fetch.IsNetwork(err) {
			t.Errorf("%s: fetch.IsNetwork = false for %v", tc.name, err)
		}
	}
	if fetch.IsNetwork(fmt.Errorf("x: %w", context.Canceled)) || fetch.IsNetwork(fetch.ErrChanged) ||
		fetch.IsNetwork(&fetch.WriteError{Err: io.ErrShortWrite}) {
		t.Error("IsNetwork is true for a cancel, a remote change or a local write error")
	}
}
