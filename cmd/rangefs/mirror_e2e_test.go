package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"rangefs/fetch/fetchtest"
)

// writeMeta4 writes a Metalink 4 file for p served at urls (in priority order), with
// piece hashes of length piece (none when piece is 0).
func writeMeta4(t *testing.T, path, name string, p *fetchtest.PatternReader, piece int64, urls ...string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n")
	fmt.Fprintf(&b, "  <file name=%q>\n    <size>%d</size>\n    <hash type=\"sha-256\">%s</hash>\n", name, p.Size(), p.SHA256())
	if piece > 0 {
		fmt.Fprintf(&b, "    <pieces length=\"%d\" type=\"sha-256\">\n", piece)
		for off := int64(0); off < p.Size(); off += piece {
			h := sha256.Sum256(p.Bytes(off, min(piece, p.Size()-off)))
			fmt.Fprintf(&b, "      <hash>%s</hash>\n", hex.EncodeToString(h[:]))
		}
		b.WriteString("    </pieces>\n")
	}
	for i, u := range urls {
		fmt.Fprintf(&b, "    <url priority=\"%d\">%s</url>\n", i+1, u)
	}
	b.WriteString("  </file>\n</metalink>\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// threeMirrors starts the three servers of p: one slow, one that dies in the middle
// of its first ranged answer, and one that serves a wrong byte at badOff whenever asked.
func threeMirrors(t *testing.T, p *fetchtest.PatternReader, badOff int64) (slow, dying, corrupt *fetchtest.Server) {
	t.Helper()
	slow = fetchtest.NewServer(p, p.Size(), fetchtest.WithConnRate(1<<20))
	dying = fetchtest.NewServer(p, p.Size())
	corrupt = fetchtest.NewServer(p, p.Size())
	for _, s := range []*fetchtest.Server{slow, dying, corrupt} {
		t.Cleanup(s.Close)
	}
	dying.Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 200000, Times: 1, RangedOnly: true,
		After: func() { go dying.Close() }})
	if badOff >= 0 {
		corrupt.Inject(fetchtest.Fault{Kind: fetchtest.Corrupt, Arg: badOff})
	}
	return slow, dying, corrupt
}

// With a Metalink, the chunk the corrupt mirror spoils is caught by its piece hash before
// it reaches the download, fetched again from another mirror, and the corrupt mirror is
// demoted; the result is exact. The mirror is picked at random, weighted by throughput,
// so the run is repeated (bounded) until the corrupt mirror has been asked for the chunk.
func TestGetMetalinkCatchesBadPieceFromMirror(t *testing.T) {
	const size, piece = 12<<20 + 4321, 256 << 10
	p := fetchtest.Pattern(size, 61)
	const badOff = 7*piece + 1000
	caught := false
	for run := 0; run < 6 && !caught; run++ {
		slow, dying, corrupt := threeMirrors(t, p, badOff)
		dir := t.TempDir()
		meta := filepath.Join(dir, "w.meta4")
		writeMeta4(t, meta, "weights.bin", p, piece, slow.URL(), dying.URL(), corrupt.URL())
		r := rangefs(t, dir, "get", "-j", "2", meta)
		if r.code != exitOK {
			t.Fatalf("run %d: exit %d: %s", run, r.code, r.stderr)
		}
		if got := fileSHA256(t, filepath.Join(dir, "weights.bin")); got != p.SHA256() {
			t.Fatalf("run %d: sha256 %s, want %s", run, got, p.SHA256())
		}
		if strings.Contains(r.stderr, "no piece hashes") {
			t.Errorf("the no-piece-hash warning was printed although the Metalink has pieces:\n%s", r.stderr)
		}
		caught = strings.Contains(r.stderr, "fails its SHA-256") && strings.Contains(r.stderr, corrupt.URL())
		t.Logf("run %d: corrupt mirror caught: %v; stderr:\n%s", run, caught, r.stderr)
	}
	if !caught {
		t.Fatal("the corrupt mirror was never asked for its bad chunk in 6 runs")
	}
}

// Without piece hashes the same servers give an exact file when the corrupt one is honest,
// and the limitation (a mirror serving other bytes cannot be caught) is said once at start.
func TestGetMirrorsWithoutHashesWarns(t *testing.T) {
	const size = 8<<20 + 99
	p := fetchtest.Pattern(size, 62)
	slow, dying, other := threeMirrors(t, p, -1)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-j", "2", "-o", "out", "--mirror", dying.URL(), "--mirror", other.URL(), slow.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := fileSHA256(t, filepath.Join(dir, "out")); got != p.SHA256() {
		t.Fatalf("sha256 %s, want %s", got, p.SHA256())
	}
	if n := strings.Count(r.stderr, "no piece hashes: a mirror that serves other bytes of the same size cannot be detected"); n != 1 {
		t.Fatalf("the limitation was said %d times, want once:\n%s", n, r.stderr)
	}
	if other.Stats().RangeRequests == 0 || slow.Stats().RangeRequests == 0 {
		t.Fatalf("not every live mirror was used: slow %d, other %d ranged requests", slow.Stats().RangeRequests, other.Stats().RangeRequests)
	}
	// With --sha256, a wrong byte from a mirror is caught at the end (exit 5, nothing saved).
	bad := fetchtest.NewServer(p, size)
	t.Cleanup(bad.Close)
	bad.Inject(fetchtest.Fault{Kind: fetchtest.Corrupt, Arg: 0})
	r = rangefs(t, dir, "get", "-q", "-o", "out2", "--sha256", p.SHA256(), "--mirror", bad.URL(), bad.URL()+"?same=1")
	if r.code != exitChecksum {
		t.Fatalf("corrupt mirrors with --sha256: exit %d, want %d: %s", r.code, exitChecksum, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out2")); !os.IsNotExist(err) {
		t.Fatalf("a file was saved after the checksum failed: %v", err)
	}
}

// A mirror of another size is refused before anything is fetched, naming it.
func TestGetMirrorOfAnotherSizeRefused(t *testing.T) {
	a, _ := patternServer(t, 1<<20, 63)
	b, _ := patternServer(t, 1<<20+1, 63)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-o", "out", "--mirror", b.URL(), a.URL())
	if r.code == exitOK || !strings.Contains(r.stderr, "mirror "+b.URL()+" is 1048577 bytes, but "+a.URL()+" is 1048576") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming the mirror", r.code, r.stderr)
	}
	if a.Stats().RangeRequests > 1 || b.Stats().RangeRequests > 1 {
		t.Fatalf("ranges were fetched before the refusal: %d, %d", a.Stats().RangeRequests, b.Stats().RangeRequests)
	}
}

// A mount of a Metalink reads through every mirror, each chunk verified; the file takes
// the Metalink's name.
func TestMountMetalink(t *testing.T) {
	needFUSE(t)
	const size, piece = 6<<20 + 17, 1 << 20
	p := fetchtest.Pattern(size, 64)
	slow, dying, corrupt := threeMirrors(t, p, 3*piece+5)
	dir := t.TempDir()
	meta := filepath.Join(dir, "m.meta4")
	writeMeta4(t, meta, "model/weights.bin", p, piece, slow.URL(), dying.URL(), corrupt.URL())
	mnt := t.TempDir()
	startMount(t, "weights.bin", "--cache-dir", t.TempDir(), meta, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(got); hex.EncodeToString(h[:]) != p.SHA256() {
		t.Fatal("the mounted file is not the Metalink's file")
	}
}

// --proxy sends get's requests through the named forward proxy, loopback included; a bad
// --proxy is a usage error that does not repeat the password.
func TestGetProxyFlag(t *testing.T) {
	srv, p := patternServer(t, 3<<20, 65)
	var proxied atomic.Int64
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		proxied.Add(1)
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), nil)
		for _, k := range []string{"Range", "If-Range", "Accept-Encoding"} {
			if v := r.Header.Get(k); v != "" {
				out.Header.Set(k, v)
			}
		}
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vv := range resp.Header {
			w.Header()[k] = vv
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(px.Close)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "-o", "out", "--proxy", px.URL, srv.URL())
	if r.code != exitOK || fileSHA256(t, filepath.Join(dir, "out")) != p.SHA256() {
		t.Fatalf("get through --proxy: exit %d: %s", r.code, r.stderr)
	}
	if n, m := proxied.Load(), srv.Stats().Requests; n == 0 || n != m {
		t.Fatalf("proxy forwarded %d requests, origin saw %d; want all of them through the proxy", n, m)
	}
	r = rangefs(t, dir, "get", "-o", "out3", "--proxy", "ftp://u:pr0xy-secret@127.0.0.1:1", srv.URL())
	if r.code != exitUsage || strings.Contains(r.stderr, "pr0xy-secret") || !strings.Contains(r.stderr, "--proxy") {
		t.Fatalf("bad --proxy: exit %d, stderr %q; want a usage error without the password", r.code, r.stderr)
	}
}

// -H headers go to the URL's own host only, never to a mirror on another host.
func TestGetMirrorHeadersStayOnTheirHost(t *testing.T) {
	own, p := patternServer(t, 2<<20, 66)
	other, _ := patternServer(t, 2<<20, 66)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "-o", "out", "-H", "X-Token: only-for-own", "--mirror", other.URL(), own.URL())
	if r.code != exitOK || fileSHA256(t, filepath.Join(dir, "out")) != p.SHA256() {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, q := range other.Requests() {
		if q.Header.Get("X-Token") != "" {
			t.Fatalf("the mirror on another host received the -H header (%s %s)", q.Method, q.Range)
		}
	}
	for _, q := range own.Requests() {
		if q.Header.Get("X-Token") != "only-for-own" {
			t.Fatalf("the URL's own host did not receive its -H header (%s %s)", q.Method, q.Range)
		}
	}
}

// --metalink beside a URL: the URL is one more mirror, the Metalink's hashes check every
// chunk and the whole file; a Metalink given twice, or naming two files, is a usage error.
func TestGetMetalinkFlagWithURL(t *testing.T) {
	const size, piece = 3<<20 + 5, 512 << 10
	a, p := patternServer(t, size, 67)
	b, _ := patternServer(t, size, 67)
	dir := t.TempDir()
	meta := filepath.Join(dir, "f.meta4")
	writeMeta4(t, meta, "named.bin", p, piece, b.URL())
	// One connection per mirror: while the first chunk is in flight on one, the
	// next must go to the other (with more, weighted chance may pick one for all).
	r := rangefs(t, dir, "get", "-q", "-j", "1", "--metalink", meta, a.URL())
	if r.code != exitOK || fileSHA256(t, filepath.Join(dir, "named.bin")) != p.SHA256() {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if a.Stats().RangeRequests == 0 || b.Stats().RangeRequests == 0 {
		t.Fatalf("ranged requests: URL %d, Metalink mirror %d; want both used", a.Stats().RangeRequests, b.Stats().RangeRequests)
	}
	// A Metalink whose hash is of other content: every piece fails, nothing is saved.
	other := filepath.Join(dir, "other.meta4")
	writeMeta4(t, other, "other.bin", fetchtest.Pattern(size, 68), piece, a.URL(), b.URL())
	if r := rangefs(t, dir, "get", "-q", other); r.code != exitNetwork || !strings.Contains(r.stderr, "SHA-256") {
		t.Fatalf("Metalink of other content: exit %d, stderr %q; want exit %d naming the SHA-256", r.code, r.stderr, exitNetwork)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.bin")); !os.IsNotExist(err) {
		t.Fatalf("a file was saved from pieces that failed their hashes: %v", err)
	}
	two := filepath.Join(dir, "two.meta4")
	os.WriteFile(two, []byte(`<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="x"><url>`+a.URL()+
		`</url></file><file name="y"><url>`+b.URL()+`</url></file></metalink>`), 0o600)
	for _, args := range [][]string{{"get", "--metalink", meta, other}, {"get", two}} {
		if r := rangefs(t, dir, args...); r.code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, r.code, exitUsage, r.stderr)
		}
	}
}

// mount --mirror reads through both servers and says once that without piece hashes a
// mirror serving other bytes cannot be caught; --mirror with two files is a usage error.
func TestMountMirrorWarnsOnce(t *testing.T) {
	needFUSE(t)
	a, p := patternServer(t, 16<<20+3, 69)
	b, _ := patternServer(t, 16<<20+3, 69)
	mnt := t.TempDir()
	// One connection per mirror: a second request in flight (read-ahead,
	// prefetch) finds the first mirror busy and must use the other.
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "-j", "1", "--mirror", b.URL(), a.URL(), mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "file"))
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(got); hex.EncodeToString(h[:]) != p.SHA256() {
		t.Fatal("the mounted file differs from the served one")
	}
	if n := strings.Count(m.stderr.String(), "no piece hashes"); n != 1 {
		t.Fatalf("the limitation was said %d times, want once:\n%s", n, m.stderr.String())
	}
	if a.Stats().RangeRequests == 0 || b.Stats().RangeRequests == 0 {
		t.Fatalf("ranged requests %d and %d; want both mirrors used", a.Stats().RangeRequests, b.Stats().RangeRequests)
	}
	r := rangefs(t, t.TempDir(), "mount", "--mirror", b.URL(), a.URL(), a.URL()+"?x=1", t.TempDir())
	if r.code != exitUsage || !strings.Contains(r.stderr, "exactly one URL") {
		t.Fatalf("--mirror with two files: exit %d, %s", r.code, r.stderr)
	}
}
