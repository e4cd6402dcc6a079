package cache

import (
	"sync"
	"testing"
)

// adviceData records the read-ahead advice given to the data file.
type adviceData struct {
	dataFile
	mu    sync.Mutex
	spans [][2]int64
}

func (d *adviceData) WillNeed(off, n int64) {
	d.mu.Lock()
	d.spans = append(d.spans, [2]int64{off, n})
	d.mu.Unlock()
}

// A sequential Reader of cached chunks asks the kernel to read its window
// of the data file ahead; a seek stops the advice.
func TestSequentialReaderAdvisesDataFile(t *testing.T) {
	size := int64(32 * testChunk)
	dir := cacheDir(t)
	fillAndClose(t, dir, testMeta(size))
	var ad *adviceData
	f := openT(t, dir, testMeta(size), newFake(size), Options{wrapData: func(d dataFile) dataFile {
		ad = &adviceData{dataFile: d}
		return ad
	}})
	r := f.NewReader()
	buf := make([]byte, testChunk)
	for i := int64(0); i < 4; i++ {
		if _, err := r.ReadAt(bg, buf, i*testChunk); err != nil {
			t.Fatal(err)
		}
	}
	ad.mu.Lock()
	spans := append([][2]int64(nil), ad.spans...)
	ad.mu.Unlock()
	// The first read of a stream earns no read-ahead: the next three do.
	if len(spans) != 3 {
		t.Fatalf("advice for 4 sequential reads: %v", spans)
	}
	for i, s := range spans {
		if s[0] != int64(i+2)*testChunk || s[1] < testChunk {
			t.Errorf("advice %d = [%d, +%d), want to start at the end of read %d", i, s[0], s[1], i+1)
		}
	}
	if _, err := r.ReadAt(bg, buf, 28*testChunk); err != nil { // a seek, past the window
		t.Fatal(err)
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if len(ad.spans) != 3 {
		t.Errorf("a seek still advised read-ahead: %v", ad.spans[3:])
	}
}

// presenceAdvice records, for each piece of advice, whether every chunk it
// covers was present when it was given.
type presenceAdvice struct {
	dataFile
	f      func() *File
	mu     sync.Mutex
	spans  [][2]int64
	absent [][2]int64 // advice covering a chunk not present at the time
}

func (d *presenceAdvice) WillNeed(off, n int64) {
	f := d.f()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.spans = append(d.spans, [2]int64{off, n})
	first, end := f.lay.span(off, n)
	if f.tab.present.nextClear(first, end) < end {
		d.absent = append(d.absent, [2]int64{off, n})
	}
}

// A sequential Reader of a cold cache advises only chunks present from an
// earlier session: a chunk not present would be read in as zeroes only for
// its fetch to write over the pages, and one fetched this session is in the
// page cache already.
func TestReaderAdvisesOnlyPresentChunks(t *testing.T) {
	size := int64(32 * testChunk)
	dir := cacheDir(t)
	// Chunks 6 and 7 are cached by an earlier session.
	f0 := openT(t, dir, testMeta(size), newFake(size), Options{})
	if _, err := f0.ReadAt(bg, make([]byte, 2*testChunk), 6*testChunk); err != nil {
		t.Fatal(err)
	}
	settle(t, f0)
	if err := f0.Close(); err != nil {
		t.Fatal(err)
	}
	var f *File
	var ad *presenceAdvice
	f = openT(t, dir, testMeta(size), newFake(size), Options{wrapData: func(d dataFile) dataFile {
		ad = &presenceAdvice{dataFile: d, f: func() *File { return f }}
		return ad
	}})
	r := f.NewReader()
	buf := make([]byte, testChunk)
	for i := int64(0); i < 6; i++ {
		if _, err := r.ReadAt(bg, buf, i*testChunk); err != nil {
			t.Fatal(err)
		}
		// What the read and its read-ahead fetched is committed before
		// the next read's advice.
		settle(t, f)
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if len(ad.absent) > 0 {
		t.Errorf("advice covering chunks not present: %v (all advice: %v)", ad.absent, ad.spans)
	}
	advised := false
	for _, s := range ad.spans {
		if s[0] < 6*testChunk || s[0]+s[1] > 8*testChunk {
			t.Errorf("advice [%d, +%d) covers chunks fetched this session, not only 6 and 7", s[0], s[1])
		}
		if s[0] <= 6*testChunk && s[0]+s[1] >= 7*testChunk {
			advised = true
		}
	}
	if !advised {
		t.Errorf("chunk 6, present from an earlier session and in the window, was never advised: %v", ad.spans)
	}
}
