package archive

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"
)

// inflateSamples are inputs that make compress/flate emit every block
// type: text (dynamic), tiny inputs (fixed), random bytes (stored), long
// runs (far matches), and mixtures that switch between them.
func inflateSamples() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := bigContent(rng, 300<<10, true)
	text := bigContent(rng, 500<<10, false)
	mixed := append(append(append([]byte{}, text[:100<<10]...), random[:100<<10]...), bytes.Repeat([]byte("ab"), 70000)...)
	return map[string][]byte{
		"empty":  nil,
		"byte":   {42},
		"short":  []byte("hello, hello, hello"),
		"text":   text,
		"random": random,
		"runs":   bytes.Repeat([]byte{0}, 1<<20),
		"mixed":  mixed,
	}
}

func deflate(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func rawInflate(comp []byte) ([]byte, error) {
	z := newInflater(bufio.NewReader(bytes.NewReader(comp)), 0, false)
	return io.ReadAll(z)
}

func TestInflateMatchesCompressFlate(t *testing.T) {
	for name, data := range inflateSamples() {
		for _, level := range []int{flate.NoCompression, flate.BestSpeed, 6, flate.BestCompression, flate.HuffmanOnly} {
			comp := deflate(t, data, level)
			got, err := rawInflate(comp)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s level %d: %d bytes, %v; want %d bytes", name, level, len(got), err, len(data))
			}
		}
	}
}

// gzipTools compresses data with every gzip tool present and returns the
// results by tool.
func gzipTools(t *testing.T, data []byte) map[string][]byte {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	writeFile(t, in, data)
	out := map[string][]byte{}
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(data)
	w.Close()
	out["compress/gzip"] = b.Bytes()
	for _, cmd := range [][]string{{"gzip", "-c", "-1"}, {"gzip", "-c", "-9"}, {"pigz", "-c", "-p", "2", "-b", "128"}, {"pigz", "-c", "-11"}} {
		if _, err := exec.LookPath(cmd[0]); err != nil {
			t.Logf("%s missing, not compared: %v", cmd[0], err)
			continue
		}
		res, err := exec.Command(cmd[0], append(cmd[1:], in)...).Output()
		if err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
		out[cmd[0]+" "+cmd[len(cmd)-1]] = res
	}
	return out
}

// TestInflateResumesAtEveryBlock decodes gzip streams from real tools,
// takes a checkpoint at every block boundary, and resumes from each: the
// output from there must equal the rest of the data, and the trailer's CRC
// must still be checked.
func TestInflateResumesAtEveryBlock(t *testing.T) {
	data := inflateSamples()["mixed"]
	for tool, comp := range gzipTools(t, data) {
		z := newInflater(bufio.NewReader(bytes.NewReader(comp)), 0, true)
		var cps []checkpoint
		z.onBlock = func(bitPos, out int64) {
			cps = append(cps, checkpoint{out: out, in: bitPos >> 3, bit: uint8(bitPos & 7), memberStart: z.memberStart, crc: z.crc, window: z.window()})
		}
		got, err := io.ReadAll(z)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, %v", tool, len(got), err)
		}
		if len(cps) < 3 {
			t.Fatalf("%s: only %d blocks", tool, len(cps))
		}
		bits := map[uint8]bool{}
		for _, cp := range cps {
			bits[cp.bit] = true
			z, err := resumeInflater(bufio.NewReader(bytes.NewReader(comp[cp.in:])), &cp)
			if err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(z)
			if err != nil || !bytes.Equal(rest, data[cp.out:]) {
				t.Fatalf("%s: resumed at out %d (in %d bit %d): %d bytes, %v", tool, cp.out, cp.in, cp.bit, len(rest), err)
			}
		}
		t.Logf("%s: %d blocks, %d distinct bit offsets", tool, len(cps), len(bits))
	}
}

func TestInflateCorruptionIsAnError(t *testing.T) {
	data := inflateSamples()["text"]
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(data)
	w.Close()
	comp := b.Bytes()
	// A flipped CRC byte in the trailer.
	bad := bytes.Clone(comp)
	bad[len(bad)-6] ^= 1
	z := newInflater(bufio.NewReader(bytes.NewReader(bad)), 0, true)
	if _, err := io.ReadAll(z); !errors.Is(err, ErrChecksum) {
		t.Fatalf("flipped trailer CRC: %v, want ErrChecksum", err)
	}
	// Truncations at many points never return all the data without error.
	for cut := 0; cut < len(comp); cut += 997 {
		z := newInflater(bufio.NewReader(bytes.NewReader(comp[:cut])), 0, true)
		got, err := io.ReadAll(z)
		if err == nil || !errors.Is(err, ErrFormat) {
			t.Fatalf("cut at %d: %d bytes, %v; want ErrFormat", cut, len(got), err)
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("cut at %d: wrong bytes before the error", cut)
		}
	}
}

// FuzzInflate compares the decoder with compress/flate on any input: both
// accept it with the same output, or both refuse it.
func FuzzInflate(f *testing.F) {
	for _, data := range inflateSamples() {
		if len(data) > 4096 {
			data = data[:4096]
		}
		for _, level := range []int{0, 1, 9, -2} {
			f.Add(deflate(f, data, level))
		}
	}
	f.Add([]byte{0x03, 0x00})
	f.Fuzz(func(t *testing.T, comp []byte) {
		want, werr := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(comp)), 1<<22))
		got, gerr := io.ReadAll(io.LimitReader(newInflater(bufio.NewReader(bytes.NewReader(comp)), 0, false), 1<<22))
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("compress/flate: %d bytes, %v; ours: %d bytes, %v", len(want), werr, len(got), gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("outputs differ: %d vs %d bytes", len(got), len(want))
		}
	})
}

func BenchmarkInflate(b *testing.B) {
	data := inflateSamples()["text"]
	comp := deflate(b, data, 6)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := rawInflate(comp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompressFlate(b *testing.B) {
	data := inflateSamples()["text"]
	comp := deflate(b, data, 6)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := io.ReadAll(flate.NewReader(bytes.NewReader(comp))); err != nil {
			b.Fatal(err)
		}
	}
}
