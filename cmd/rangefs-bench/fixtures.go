package main

import (
	"archive/zip"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"rangefs/fetch/fetchtest/content"
)

// A fixture is a file a real client program reads in the client rows: a video, a zip, a
// SQLite database. Each is a pure function of its parameters (and of the tool version
// that makes it), generated once into the fixture directory under a name that carries a
// hash of those parameters, so a re-run with the same parameters reuses it and a change
// of any parameter makes a new one.
type fixture struct {
	name   string   // name it is served under, e.g. "video.mp4"
	params string   // canonical parameter string: the cache key
	tools  []string // programs gen runs ("" = pure Go)
	deps   []*fixture
	// gen writes the fixture to out (a temporary path in the fixture directory); deps
	// holds the paths of the fixtures it is made from, in order.
	gen func(ctx context.Context, out string, deps []string) error
}

// key is the hash that names the cached file: the parameters, the versions of the tools
// that make it, and the keys of the fixtures it derives from.
func (f *fixture) key(versions func(tool string) string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", f.name, f.params)
	for _, t := range f.tools {
		fmt.Fprintf(h, "tool %s %s\n", t, versions(t))
	}
	for _, d := range f.deps {
		fmt.Fprintf(h, "dep %s\n", d.key(versions))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// cachedName is the fixture's file name in the fixture directory: "video-<key>.mp4".
func (f *fixture) cachedName(versions func(string) string) string {
	ext := filepath.Ext(f.name)
	return strings.TrimSuffix(f.name, ext) + "-" + f.key(versions) + ext
}

// fixtureStore generates fixtures into dir and remembers what it made in this run.
type fixtureStore struct {
	dir      string
	log      io.Writer
	versions func(tool string) string
	made     map[*fixture]string // path of each fixture ensured so far
}

func newFixtureStore(dir string, log io.Writer) *fixtureStore {
	vs := map[string]string{}
	return &fixtureStore{dir: dir, log: log, made: map[*fixture]string{}, versions: func(t string) string {
		v, ok := vs[t]
		if !ok {
			v = firstLine(t, "-version")
			vs[t] = v
		}
		return v
	}}
}

// ensure returns the path of f, generating it (and what it derives from) when the
// directory has no complete copy. A copy is complete when its ".done" marker exists: the
// generator writes a temporary file, renames it into place, then writes the marker, so an
// interrupted generation is never reused.
func (s *fixtureStore) ensure(ctx context.Context, f *fixture) (string, error) {
	if p, ok := s.made[f]; ok {
		return p, nil
	}
	for _, t := range f.tools {
		if _, err := exec.LookPath(t); err != nil {
			return "", fmt.Errorf("%s not installed (make bench-deps)", t)
		}
	}
	var deps []string
	for _, d := range f.deps {
		p, err := s.ensure(ctx, d)
		if err != nil {
			return "", err
		}
		deps = append(deps, p)
	}
	// Absolute: the client commands run in the work dir, not where --out was given.
	dir, err := filepath.Abs(s.dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, f.cachedName(s.versions))
	done := p + ".done"
	if _, err := os.Stat(done); err == nil {
		if _, err := os.Stat(p); err == nil {
			s.made[f] = p
			return p, nil
		}
	}
	os.Remove(done)
	fmt.Fprintf(s.log, "generating fixture %s (%s)\n", filepath.Base(p), f.params)
	t0 := time.Now()
	tmp := p + ".tmp" + filepath.Ext(f.name) // ffmpeg picks the muxer from the extension
	os.Remove(tmp)
	if err := f.gen(ctx, tmp, deps); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("fixture %s: %w", f.name, err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	if err := os.WriteFile(done, []byte(f.params+"\n"), 0o644); err != nil {
		return "", err
	}
	fmt.Fprintf(s.log, "  made in %.1f s\n", time.Since(t0).Seconds())
	s.made[f] = p
	return p, nil
}

// runGen runs a generator command, bounded by ctx and 10 minutes; its output goes into
// the error when it fails.
func runGen(ctx context.Context, stdin string, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, tailLines(string(out), 3))
	}
	return nil
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], " / ")
}

// videoParams pick the test video. Noise on testsrc2 keeps x264 from compressing it to
// nothing, so the file has a realistic bitrate (about 25 Mbit/s at 1280x720 with noise
// 8) and a probe or a one-second decode reads a small part of it.
type videoParams struct {
	Width, Height, FPS int
	Seconds            int
	Noise              int // noise filter strength (alls)
	Seed               int // noise filter seed (all_seed)
	GOP                int // frames between keyframes
}

func (v videoParams) String() string {
	return fmt.Sprintf("testsrc2 %dx%d@%d %ds noise=%d seed=%d gop=%d x264-ultrafast aac-128k",
		v.Width, v.Height, v.FPS, v.Seconds, v.Noise, v.Seed, v.GOP)
}

// bitexact keeps ffmpeg from writing anything that varies between runs (version
// strings, random Matroska segment UIDs).
var bitexact = []string{"-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"}

// mp4Fixture is an H.264/AAC MP4 as ffmpeg writes it by default: mdat first, the moov
// index at the end (not "faststart"), so a probe has to read the file's tail.
func mp4Fixture(v videoParams) *fixture {
	return &fixture{name: "video.mp4", params: v.String() + " moov-at-end", tools: []string{"ffmpeg"},
		gen: func(ctx context.Context, out string, _ []string) error {
			a := []string{"ffmpeg", "-nostdin", "-v", "error", "-y",
				"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=%d:duration=%d,noise=alls=%d:allf=t:all_seed=%d",
					v.Width, v.Height, v.FPS, v.Seconds, v.Noise, v.Seed),
				"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=48000:duration=%d", v.Seconds),
				"-c:v", "libx264", "-preset", "ultrafast", "-g", itoa(v.GOP), "-pix_fmt", "yuv420p",
				"-c:a", "aac", "-b:a", "128k"}
			a = append(append(a, bitexact...), out)
			if err := runGen(ctx, "", a...); err != nil {
				return err
			}
			// The probe row is about an index at the end: refuse a faststart file.
			boxes, err := mp4Boxes(out)
			if err != nil {
				return err
			}
			if m, d := slices.Index(boxes, "moov"), slices.Index(boxes, "mdat"); m < 0 || d < 0 || m < d {
				return fmt.Errorf("ffmpeg wrote top-level boxes %v: want moov after mdat", boxes)
			}
			return nil
		}}
}

// mkvFixture is the same streams remuxed into Matroska (cues at the end, as ffmpeg writes).
func mkvFixture(src *fixture) *fixture {
	return &fixture{name: "video.mkv", params: "remux of video.mp4", tools: []string{"ffmpeg"}, deps: []*fixture{src},
		gen: func(ctx context.Context, out string, deps []string) error {
			a := []string{"ffmpeg", "-nostdin", "-v", "error", "-y", "-i", deps[0], "-c", "copy"}
			a = append(append(a, bitexact...), out)
			return runGen(ctx, "", a...)
		}}
}

// zipParams pick the test archive: Members deflated members of MemberSize bytes of hex
// text (it deflates to about half), written by archive/zip with a fixed timestamp.
type zipParams struct {
	Members    int
	MemberSize int
	Seed       uint64
}

func (z zipParams) String() string {
	return fmt.Sprintf("zip %d members of %d bytes hex text, deflate level 1, seed %d", z.Members, z.MemberSize, z.Seed)
}

// zipMemberName is member i's name.
func zipMemberName(i int) string { return fmt.Sprintf("dir%02d/member-%05d.txt", i%16, i) }

func zipFixture(z zipParams) *fixture {
	return &fixture{name: "archive.zip", params: z.String(),
		gen: func(ctx context.Context, out string, _ []string) error { return writeZip(ctx, out, z) }}
}

// zipMemberContent is member i's bytes: hex of the pattern generator, 64 digits a line.
func zipMemberContent(z zipParams, i int) []byte {
	raw := make([]byte, (z.MemberSize+1)/2)
	// Each member draws from its own region of the pattern, so no two are alike.
	content.Fill(raw, int64(i)<<32, z.Seed)
	h := make([]byte, hex.EncodedLen(len(raw)))
	hex.Encode(h, raw)
	h = h[:z.MemberSize]
	for j := 64; j < len(h); j += 65 {
		h[j] = '\n'
	}
	return h
}

func writeZip(ctx context.Context, out string, z zipParams) error {
	if z.Members <= 0 || z.MemberSize <= 0 {
		return errors.New("zip fixture needs members and a member size")
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := zip.NewWriter(f)
	w.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, flate.BestSpeed)
	})
	mtime := time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC)
	for i := 0; i < z.Members; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hw, err := w.CreateHeader(&zip.FileHeader{Name: zipMemberName(i), Method: zip.Deflate, Modified: mtime})
		if err != nil {
			return err
		}
		if _, err := hw.Write(zipMemberContent(z, i)); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// sqliteParams pick the test database: Rows rows of (id, k, payload) with an index on
// k; keys are a permutation of the ids, so the index order differs from the table's.
type sqliteParams struct {
	Rows       int
	PayloadLen int // bytes of payload text per row
}

func (q sqliteParams) String() string {
	return fmt.Sprintf("sqlite %d rows, payload %d, index on k, page 4096", q.Rows, q.PayloadLen)
}

// sqliteKey is the key of row id.
func sqliteKey(q sqliteParams, id int) string {
	return fmt.Sprintf("k%09d", (id*7919)%q.Rows)
}

// sqliteScript builds the database. Everything in it is deterministic (no random(), no
// time), so the same SQLite version writes the same bytes.
func sqliteScript(q sqliteParams) string {
	return fmt.Sprintf(`PRAGMA page_size=4096;
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, payload TEXT NOT NULL);
BEGIN;
WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x+1 FROM c WHERE x < %d)
INSERT INTO t(id, k, payload)
SELECT x, printf('k%%09d', (x*7919) %% %d), substr(hex(zeroblob(%d)) || printf('%%020d', x*x), -%d) FROM c;
COMMIT;
CREATE INDEX t_k ON t(k);
`, q.Rows-1, q.Rows, (q.PayloadLen+1)/2, q.PayloadLen)
}

func sqliteFixture(q sqliteParams) *fixture {
	return &fixture{name: "table.db", params: q.String(), tools: []string{"sqlite3"},
		gen: func(ctx context.Context, out string, _ []string) error {
			if q.Rows <= 0 || q.Rows%7919 == 0 || q.PayloadLen < 20 {
				return fmt.Errorf("bad sqlite fixture parameters %s", q)
			}
			return runGen(ctx, sqliteScript(q), "sqlite3", "-batch", out)
		}}
}

// mp4Boxes lists the top-level box types of an MP4 file in order (to check where moov is).
func mp4Boxes(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var out []string
	var hdr [16]byte
	for off := int64(0); off < fi.Size() && len(out) < 1000; {
		if _, err := f.ReadAt(hdr[:8], off); err != nil {
			return out, fmt.Errorf("box at %d: %w", off, err)
		}
		size := int64(binary.BigEndian.Uint32(hdr[:4]))
		typ := string(hdr[4:8])
		switch size {
		case 1:
			if _, err := f.ReadAt(hdr[8:16], off+8); err != nil {
				return out, err
			}
			size = int64(binary.BigEndian.Uint64(hdr[8:16]))
		case 0:
			size = fi.Size() - off
		}
		if size < 8 {
			return out, fmt.Errorf("box %q at %d has size %d", typ, off, size)
		}
		out = append(out, typ)
		off += size
	}
	return out, nil
}

// sha256File is the hex sha256 of a file.
func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
