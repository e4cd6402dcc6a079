package main

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/content"
)

func fixedVersions(v string) func(string) string { return func(string) string { return v } }

func TestFixtureKeyFollowsParamsToolsAndDeps(t *testing.T) {
	v := videoParams{Width: 160, Height: 120, FPS: 10, Seconds: 2, Noise: 8, Seed: 1, GOP: 10}
	a, b := mp4Fixture(v), mp4Fixture(v)
	if a.key(fixedVersions("x")) != b.key(fixedVersions("x")) {
		t.Fatal("same parameters gave different keys")
	}
	v2 := v
	v2.Seed = 2
	if a.key(fixedVersions("x")) == mp4Fixture(v2).key(fixedVersions("x")) {
		t.Fatal("a different seed kept the key")
	}
	if a.key(fixedVersions("x")) == a.key(fixedVersions("y")) {
		t.Fatal("a different ffmpeg version kept the key")
	}
	if mkvFixture(a).key(fixedVersions("x")) == mkvFixture(mp4Fixture(v2)).key(fixedVersions("x")) {
		t.Fatal("a remux of a different source kept the key")
	}
	name := a.cachedName(fixedVersions("x"))
	if !strings.HasPrefix(name, "video-") || !strings.HasSuffix(name, ".mp4") || len(name) != len("video-.mp4")+16 {
		t.Fatalf("cached name %q, want video-<16 hex>.mp4", name)
	}
}

func TestZipFixtureIsDeterministicAndReadable(t *testing.T) {
	z := zipParams{Members: 40, MemberSize: 5000, Seed: 3}
	dir := t.TempDir()
	var sums []string
	for i := 0; i < 2; i++ {
		p := filepath.Join(dir, "a"+itoa(i)+".zip")
		if err := writeZip(context.Background(), p, z); err != nil {
			t.Fatal(err)
		}
		s, err := sha256File(p)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, s)
	}
	if sums[0] != sums[1] {
		t.Fatalf("two generations differ: %s vs %s", sums[0], sums[1])
	}
	zr, err := zip.OpenReader(filepath.Join(dir, "a0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != z.Members {
		t.Fatalf("%d members, want %d", len(zr.File), z.Members)
	}
	seen := map[string]bool{}
	for i, f := range zr.File {
		if f.Name != zipMemberName(i) || f.Method != zip.Deflate {
			t.Fatalf("member %d: %q method %d", i, f.Name, f.Method)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, zipMemberContent(z, i)) || len(got) != z.MemberSize {
			t.Fatalf("member %d: content differs from the generator (%d bytes)", i, len(got))
		}
		if seen[string(got)] {
			t.Fatalf("member %d repeats an earlier member", i)
		}
		seen[string(got)] = true
		// Hex text deflates to about half: the members are neither stored nor trivial.
		if f.CompressedSize64 > f.UncompressedSize64*3/4 || f.CompressedSize64 < f.UncompressedSize64/4 {
			t.Fatalf("member %d deflated %d -> %d bytes, want about half", i, f.UncompressedSize64, f.CompressedSize64)
		}
	}
	if err := writeZip(context.Background(), filepath.Join(dir, "bad.zip"), zipParams{}); err == nil {
		t.Fatal("zip parameters without members were accepted")
	}
}

func TestFixtureStoreReusesAndNeverKeepsAHalfFile(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	fail := false
	f := &fixture{name: "x.bin", params: "p1", gen: func(_ context.Context, out string, _ []string) error {
		calls++
		if err := os.WriteFile(out, []byte("payload"), 0o600); err != nil {
			return err
		}
		if fail {
			return errors.New("generator failed")
		}
		return nil
	}}
	s := newFixtureStore(dir, io.Discard)
	p, err := s.ensure(context.Background(), f)
	if err != nil || calls != 1 {
		t.Fatalf("first ensure: %v, %d calls", err, calls)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("fixture %s: %v (nginx workers must be able to read it)", p, err)
	}
	// A new store (a new run) finds the finished file.
	if p2, err := newFixtureStore(dir, io.Discard).ensure(context.Background(), f); err != nil || p2 != p || calls != 1 {
		t.Fatalf("second run: %s %v, %d calls; want reuse of %s", p2, err, calls, p)
	}
	// Without its done marker the file is not trusted and is made again.
	os.Remove(p + ".done")
	if _, err := newFixtureStore(dir, io.Discard).ensure(context.Background(), f); err != nil || calls != 2 {
		t.Fatalf("after losing the marker: %v, %d calls, want a regeneration", err, calls)
	}
	// A failing generator leaves neither the file nor its temporary.
	g := &fixture{name: "y.bin", params: "p", gen: f.gen}
	fail = true
	if _, err := newFixtureStore(dir, io.Discard).ensure(context.Background(), g); err == nil {
		t.Fatal("a failing generator was reported as success")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "y-") {
			t.Fatalf("failed generation left %s", e.Name())
		}
	}
	// A missing tool is named.
	h := &fixture{name: "z.bin", params: "p", tools: []string{"no-such-tool-rangefs-bench"}, gen: f.gen}
	if _, err := s.ensure(context.Background(), h); err == nil || !strings.Contains(err.Error(), "no-such-tool-rangefs-bench not installed") {
		t.Fatalf("missing tool: %v", err)
	}
}

func TestSQLiteFixtureIsDeterministicAndIndexed(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 not installed (make bench-deps): cannot generate the database fixture")
	}
	q := sqliteParams{Rows: 2000, PayloadLen: 60}
	f := sqliteFixture(q)
	dir := t.TempDir()
	var sums []string
	for i := 0; i < 2; i++ {
		p := filepath.Join(dir, "t"+itoa(i)+".db")
		if err := f.gen(context.Background(), p, nil); err != nil {
			t.Fatal(err)
		}
		s, err := sha256File(p)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, s)
	}
	if sums[0] != sums[1] {
		t.Fatalf("two generations differ: %s vs %s", sums[0], sums[1])
	}
	p := filepath.Join(dir, "t0.db")
	var out bytes.Buffer
	err := runClientCmd(context.Background(), []string{"sqlite3", "-readonly", sqliteURI(p),
		"SELECT id, length(payload) FROM t WHERE k = '" + sqliteKey(q, 1234) + "';"}, dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != "1234|60" {
		t.Fatalf("lookup printed %q, want 1234|60", got)
	}
	out.Reset()
	err = runClientCmd(context.Background(), []string{"sqlite3", "-readonly", sqliteURI(p),
		"EXPLAIN QUERY PLAN SELECT id FROM t WHERE k = 'k000000001';"}, dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "USING INDEX t_k") && !strings.Contains(out.String(), "USING COVERING INDEX t_k") {
		t.Fatalf("the lookup does not use the index: %s", out.String())
	}
	if err := sqliteFixture(sqliteParams{Rows: 7919 * 2, PayloadLen: 60}).gen(context.Background(), filepath.Join(dir, "bad.db"), nil); err == nil {
		t.Fatal("a row count that breaks the key permutation was accepted")
	}
}

func TestVideoFixturesAreDeterministicWithMoovAtTheEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping ffmpeg video generation")
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (make bench-deps): cannot generate the video fixtures")
	}
	v := videoParams{Width: 160, Height: 120, FPS: 10, Seconds: 2, Noise: 8, Seed: 1, GOP: 10}
	mp4 := mp4Fixture(v)
	mkv := mkvFixture(mp4)
	dir := t.TempDir()
	var sums []string
	for i := 0; i < 2; i++ {
		s := newFixtureStore(filepath.Join(dir, itoa(i)), io.Discard)
		for _, f := range []*fixture{mp4, mkv} {
			p, err := s.ensure(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := sha256File(p)
			if err != nil {
				t.Fatal(err)
			}
			sums = append(sums, sum)
		}
	}
	if sums[0] != sums[2] || sums[1] != sums[3] {
		t.Fatalf("two generations differ: mp4 %s vs %s, mkv %s vs %s", sums[0], sums[2], sums[1], sums[3])
	}
	p, _ := newFixtureStore(filepath.Join(dir, "0"), io.Discard).ensure(context.Background(), mp4)
	boxes, err := mp4Boxes(p)
	if err != nil {
		t.Fatal(err)
	}
	mdat, moov := slices.Index(boxes, "mdat"), slices.Index(boxes, "moov")
	if mdat < 0 || moov < mdat {
		t.Fatalf("top-level boxes %v: want moov after mdat (not faststart)", boxes)
	}
}

func TestMp4BoxesRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.mp4")
	// A box claiming 4 bytes (less than its own header).
	os.WriteFile(p, []byte{0, 0, 0, 4, 'f', 't', 'y', 'p', 0, 0, 0, 0}, 0o644)
	if _, err := mp4Boxes(p); err == nil {
		t.Fatal("a box smaller than its header was accepted")
	}
	os.WriteFile(p, []byte{0, 0, 0, 8, 'f', 't', 'y', 'p', 0, 0, 0, 8, 'm', 'o', 'o', 'v'}, 0o644)
	if b, err := mp4Boxes(p); err != nil || !slices.Equal(b, []string{"ftyp", "moov"}) {
		t.Fatalf("boxes %v, %v", b, err)
	}
}

func TestClientRowsAreSelectable(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := selectRows(buildRows(cfg), []string{"client"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	want := []string{"client-ffprobe-mp4", "client-ffprobe-mkv", "client-ffmpeg-seek", "client-unzip",
		"client-zipfile", "client-sqlite", "client-head"}
	if !slices.Equal(ids, want) {
		t.Fatalf("--only client selected %v, want %v", ids, want)
	}
	rows, err = selectRows(buildRows(cfg), []string{"client-ffprobe"}, nil)
	if err != nil || len(rows) != 2 {
		t.Fatalf("--only client-ffprobe: %d rows, %v", len(rows), err)
	}
	rows, err = selectRows(buildRows(cfg), []string{"sqlite3"}, nil)
	if err != nil || len(rows) != 1 || rows[0].id != "client-sqlite" {
		t.Fatalf("--only sqlite3: %v, %v", rows, err)
	}
	// The client rows stay out of --only get and --only rclone.
	for _, sel := range []string{"get", "rclone", "rangefs"} {
		rows, _ = selectRows(buildRows(cfg), []string{sel}, nil)
		for _, r := range rows {
			if strings.HasPrefix(r.id, "client") {
				t.Fatalf("--only %s selected %s", sel, r.id)
			}
		}
	}
}

func TestClientCommandsNameNoPathInTheirOutput(t *testing.T) {
	// The expected output comes from the local file and is compared with the mounted
	// file's: a command whose output carried the path could never match.
	for _, c := range clientCases() {
		for _, argv := range c.cmds("/some/where/FILE") {
			if argv[0] != c.tool {
				t.Errorf("%s runs %s, registered as %s", c.id, argv[0], c.tool)
			}
			if !slices.ContainsFunc(argv, func(a string) bool { return strings.Contains(a, "FILE") }) {
				t.Errorf("%s: %v does not read the file", c.id, argv)
			}
		}
	}
	if got := sqliteURI("/a b/t.db"); got != "file:///a%20b/t.db?mode=ro&immutable=1" {
		t.Fatalf("sqliteURI = %q", got)
	}
}

func TestRunClientCmds(t *testing.T) {
	dir := t.TempDir()
	sum1, n, err := runClientCmds(context.Background(), [][]string{{"sh", "-c", "printf ab"}, {"sh", "-c", "printf c"}}, dir)
	if err != nil || n != 3 {
		t.Fatalf("%v, %d bytes", err, n)
	}
	sum2, _, _ := runClientCmds(context.Background(), [][]string{{"sh", "-c", "printf abc"}}, dir)
	if sum1 != sum2 {
		t.Fatal("the hash is not of the concatenated output")
	}
	_, _, err = runClientCmds(context.Background(), [][]string{{"sh", "-c", "echo broken >&2; exit 3"}}, dir)
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("failing command: %v, want its stderr quoted", err)
	}
	_, _, err = runClientCmds(context.Background(), [][]string{{"sh", "-c", "echo only-on-stdout; exit 9"}}, dir)
	if err == nil || !strings.Contains(err.Error(), "only-on-stdout") {
		t.Fatalf("failing command that reports on stdout: %v, want its stdout quoted", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, _, err = runClientCmds(ctx, [][]string{{"sh", "-c", "sleep 30 & sleep 30"}}, dir)
	if err == nil || time.Since(t0) > 10*time.Second {
		t.Fatalf("cancelled command: %v after %v", err, time.Since(t0))
	}
}

func TestMedianAndClientTable(t *testing.T) {
	if median([]int64{5, 1, 3}) != 3 || median([]int64{4, 1}) != 1 || median([]int64(nil)) != 0 {
		t.Fatal("median")
	}
	in := []int64{9, 2, 7}
	median(in)
	if !slices.Equal(in, []int64{9, 2, 7}) {
		t.Fatal("median sorted its input")
	}
	var rf, rc result
	rf = result{ID: "client-x/rangefs", Section: secClients, Tool: "rangefs", Label: "thing; rangefs mount", Verified: true, Bytes: 1536}
	fillClientResult(&rf, []clientRun{{wall: 300 * time.Millisecond, served: 4096 << 10}, {wall: 100 * time.Millisecond, served: 1024 << 10}, {wall: 200 * time.Millisecond, served: 2048 << 10}})
	if rf.Wall != 200*time.Millisecond || rf.Served != 2048<<10 {
		t.Fatalf("medians %v %d", rf.Wall, rf.Served)
	}
	if !strings.Contains(rf.Note, "served KiB 4096/1024/2048") {
		t.Fatalf("note %q", rf.Note)
	}
	rc = result{ID: "client-x/rclone-tuned", Section: secClients, Tool: "rclone", Label: "thing; rclone", Verified: true, Served: 512 << 10, Wall: 100 * time.Millisecond}
	bad := result{ID: "client-y/rangefs", Section: secClients, Tool: "rangefs", Label: "other; rangefs", Err: "mount: boom"}
	rest, cl := splitClients([]result{{ID: "get-j8"}, rf, rc, bad})
	if len(rest) != 1 || len(cl) != 3 {
		t.Fatalf("split %d/%d", len(rest), len(cl))
	}
	var b bytes.Buffer
	if err := writeClientTable(&b, cl); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("table:\n%s", b.String())
	}
	if want := "| client-x | thing | 1.5 | 2048 | 0.200 | 512 | 0.100 | 4.0x | rangefs ok, rclone ok |"; lines[4] != want {
		t.Fatalf("row\n%s\nwant\n%s", lines[4], want)
	}
	if want := "| client-y | other | - | - | - | - | - | - | rangefs failed: mount: boom, rclone not run |"; lines[5] != want {
		t.Fatalf("row\n%s\nwant\n%s", lines[5], want)
	}
}

func TestFixtureStoreGivesAbsolutePathsForARelativeDir(t *testing.T) {
	// --out is relative by default, and the client commands run in the work dir: a
	// relative fixture path would name nothing there.
	t.Chdir(t.TempDir())
	f := &fixture{name: "x.bin", params: "p", gen: func(_ context.Context, out string, _ []string) error {
		return os.WriteFile(out, []byte("x"), 0o644)
	}}
	p, err := newFixtureStore(filepath.Join("bench-out", "fixtures"), io.Discard).ensure(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(p) {
		t.Fatalf("fixture path %q is relative", p)
	}
}

func TestCountFSCountsWhatIsRead(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: cannot mount the counting file system")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 1<<20)
	content.Fill(data, 0, 7)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	c, err := mountCountFS(mnt, map[string]string{"f.bin": src})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.close()
		if isMounted(mnt) {
			t.Errorf("%s still mounted after close", mnt)
		}
	}()
	f, err := os.Open(c.path("f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// Closed before the unmount above, also on failure: the server is this process, and
	// a file of its own mount left open at exit would wait on it for ever.
	defer f.Close()
	buf := make([]byte, 1000)
	if _, err := f.ReadAt(buf, 5000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[5000:6000]) {
		t.Fatal("wrong bytes through the counting mount")
	}
	// Direct I/O: no read-ahead, so the count is the 1000 bytes asked for.
	if got := c.readBytes("f.bin"); got != 1000 {
		t.Fatalf("counted %d bytes, want 1000", got)
	}
	// A read past the end returns what there is and counts it.
	n, _ := f.ReadAt(buf, int64(len(data))-10)
	if n != 10 || c.readBytes("f.bin") != 1010 {
		t.Fatalf("tail read %d, count %d; want 10, 1010", n, c.readBytes("f.bin"))
	}
	f.Close()
	c.reset()
	if c.readBytes("f.bin") != 0 || c.readBytes("nope") != 0 {
		t.Fatal("reset")
	}
	if err := os.WriteFile(c.path("f.bin"), []byte("x"), 0o644); err == nil {
		t.Fatal("the counting mount accepted a write")
	}
}
