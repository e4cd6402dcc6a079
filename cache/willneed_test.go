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
