package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

func TestParseArgs(t *testing.T) {
	c, err := parseArgs([]string{"--size", "1MiB", "--seed", "9", "--rate", "1000"}, io.Discard)
	if err != nil || c.size != 1<<20 || c.seed != 9 || c.rate != 1000 || c.addr != "127.0.0.1:0" {
		t.Fatalf("parseArgs = %+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"--file", "x", "--size", "1"}, {"--rate", "-1"}, {"extra"}, {"--size", "big"}, {"--nope"},
	} {
		if _, err := parseArgs(args, io.Discard); err == nil {
			t.Errorf("parseArgs(%q) succeeded", args)
		}
	}
}

// run prints one URL line, serves ranges of the pattern, and returns 0 on the stop signal.
func TestRunServesUntilStopped(t *testing.T) {
	pr, pw := io.Pipe()
	stop := make(chan os.Signal, 1)
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"--size", "100000", "--seed", "4"}, pw, io.Discard, stop)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	url := strings.TrimSpace(line)
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Range", "bytes=500-599")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(body, fetchtest.Pattern(100000, 4).Bytes(500, 100)) {
		t.Fatalf("GET %s: %d, %d bytes", url, resp.StatusCode, len(body))
	}
	http.DefaultClient.CloseIdleConnections()
	stop <- os.Interrupt
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("exit code %d", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after the stop signal")
	}
}
