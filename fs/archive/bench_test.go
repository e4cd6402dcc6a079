package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// holeWriter writes long runs of zeros as holes, so that a 300 MiB archive
// of zero-filled members costs a few MiB of disk and no time.
type holeWriter struct{ f *os.File }

func (h *holeWriter) Write(p []byte) (int, error) {
	if len(p) >= 4096 && isZero(p) {
		if _, err := h.f.Seek(int64(len(p)), io.SeekCurrent); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return h.f.Write(p)
}

func isZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// sparseArchive writes an archive with write and returns its path and size.
func sparseArchive(t testing.TB, name string, write func(w io.Writer) error) (string, int64) {
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := write(&holeWriter{f}); err != nil {
		t.Fatal(err)
	}
	end, _ := f.Seek(0, io.SeekCurrent)
	if err := f.Truncate(end); err != nil {
		t.Fatal(err)
	}
	return p, end
}

// bigZip: n stored members of size bytes each (zeros), as a stored zip.
func bigZip(t testing.TB, n, size int) (string, int64) {
	zeros := make([]byte, size)
	crc := crc32.ChecksumIEEE(zeros)
	return sparseArchive(t, "big.zip", func(w io.Writer) error {
		zw := zip.NewWriter(w)
		for i := range n {
			fw, err := zw.CreateRaw(&zip.FileHeader{Name: fmt.Sprintf("dir%02d/member-%05d.bin", i%50, i), Method: zip.Store,
				CRC32: crc, CompressedSize64: uint64(size), UncompressedSize64: uint64(size)})
			if err != nil {
				return err
			}
			if _, err := fw.Write(zeros); err != nil {
				return err
			}
		}
		return zw.Close()
	})
}

func bigTar(t testing.TB, n, size int) (string, int64) {
	zeros := make([]byte, size)
	return sparseArchive(t, "big.tar", func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for i := range n {
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("dir%02d/member-%05d.bin", i%50, i), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := tw.Write(zeros); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}

// listFraction lists an archive through a counting reader and returns the
// share of its bytes read.
func listFraction(t testing.TB, p string, open func(io.ReaderAt, int64) (*Archive, error), wantEntries int) (float64, int64) {
	f, size := openFile(t, p)
	cr := &countingReaderAt{r: f}
	a, err := open(cr, size)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(listedNames(a)); n != wantEntries {
		t.Fatalf("%d entries listed, want %d", n, wantEntries)
	}
	return float64(cr.bytes.Load()) / float64(size), cr.calls.Load()
}

func openZip(r io.ReaderAt, n int64) (*Archive, error) { return OpenZip(r, n, Limits{}) }
func openTar(r io.ReaderAt, n int64) (*Archive, error) { return OpenTar(r, n, Limits{}) }

// TestZipListingReadsUnderOnePercent: a 300 MiB zip of 3,000 members lists
// from two reads, under 1% of its bytes.
func TestZipListingReadsUnderOnePercent(t *testing.T) {
	p, size := bigZip(t, 3000, 100<<10)
	frac, calls := listFraction(t, p, openZip, 3000)
	t.Logf("%d-byte zip: %d reads, %.3f%% of its bytes", size, calls, frac*100)
	if frac > 0.01 || calls > 2 {
		t.Fatalf("listing read %.3f%% in %d reads, want <= 1%% in 2", frac*100, calls)
	}
}

// TestTarListingReadsUnderTwoPercent: a 400 MiB tar of 2,000 members lists
// by header hops, under 2% of its bytes.
func TestTarListingReadsUnderTwoPercent(t *testing.T) {
	p, size := bigTar(t, 2000, 200<<10)
	frac, calls := listFraction(t, p, openTar, 2000)
	t.Logf("%d-byte tar: %d reads, %.3f%% of its bytes", size, calls, frac*100)
	if frac > 0.02 {
		t.Fatalf("listing read %.3f%%, want <= 2%%", frac*100)
	}
}

func BenchmarkZipListing300MiB(b *testing.B) {
	p, _ := bigZip(b, 3000, 100<<10)
	var frac float64
	var calls int64
	for b.Loop() {
		frac, calls = listFraction(b, p, openZip, 3000)
	}
	b.ReportMetric(frac*100, "%read")
	b.ReportMetric(float64(calls), "reads")
}

func BenchmarkTarListing400MiB(b *testing.B) {
	p, _ := bigTar(b, 2000, 200<<10)
	var frac float64
	var calls int64
	for b.Loop() {
		frac, calls = listFraction(b, p, openTar, 2000)
	}
	b.ReportMetric(frac*100, "%read")
	b.ReportMetric(float64(calls), "reads")
}

// BenchmarkTarGzMemberFromIndex reads a 1 MiB member from the middle of a
// tar.gz whose index exists: the archive bytes read cover at most one
// checkpoint span before the member.
func BenchmarkTarGzMemberFromIndex(b *testing.B) {
	rng := newRand(5)
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	const members = 64
	for i := range members {
		data := bigContent(rng, 1<<20, i%4 == 0)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("m%03d", i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.Close()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw.Bytes())
	zw.Close()
	data := gz.Bytes()
	a := IndexTarGz(context.Background(), bytes.NewReader(data), int64(len(data)), Limits{})
	waitDone(b, a)
	if a.Err() != nil {
		b.Fatal(a.Err())
	}
	idx := must(a.MarshalBinary())
	name := fmt.Sprintf("m%03d", members/2+1)
	var read int64
	for b.Loop() {
		cr := &countingReaderAt{r: bytes.NewReader(data)}
		x, err := LoadIndex(cr, int64(len(data)), idx, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if got := readAll(b, x, name, 128<<10); len(got) != 1<<20 {
			b.Fatal("short member")
		}
		read = cr.bytes.Load()
	}
	b.ReportMetric(float64(read)/float64(len(data))*100, "%read")
	b.ReportMetric(float64(len(idx)), "index-bytes")
}
