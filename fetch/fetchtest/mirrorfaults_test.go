package fetchtest

import (
	"bytes"
	"testing"
)

// Corrupt inverts exactly the byte at its offset, in a range that holds it and in a whole
// body, and leaves other ranges alone (and unconsumed).
func TestServerCorrupt(t *testing.T) {
	s, p := newServer(t, 100000)
	s.Inject(Fault{Kind: Corrupt, Arg: 5000, Times: 2})
	if _, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=0-999"}); err != nil || !bytes.Equal(body, p.Bytes(0, 1000)) {
		t.Fatalf("range without the offset: %v, intact %v", err, bytes.Equal(body, p.Bytes(0, 1000)))
	}
	_, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=4000-5999"})
	want := p.Bytes(4000, 2000)
	want[1000] ^= 0xFF
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("range with the offset: %v, corrupted as asked %v", err, bytes.Equal(body, want))
	}
	_, body, err = get(t, s.URL(), nil)
	want = p.Bytes(0, 100000)
	want[5000] ^= 0xFF
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("whole body: %v, corrupted as asked %v", err, bytes.Equal(body, want))
	}
	if _, body, _ = get(t, s.URL(), nil); !bytes.Equal(body, p.Bytes(0, 100000)) {
		t.Fatal("the fault outlived its Times")
	}
}

// DropFailedIfRange answers a matching If-Range and closes the connection on another one.
func TestServerDropFailedIfRange(t *testing.T) {
	s, p := newServer(t, 100000, WithBehavior(Behavior{DropFailedIfRange: true}))
	etag := s.ETag(DefaultPath)
	if resp, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=0-9", "If-Range": etag}); err != nil ||
		resp.StatusCode != 206 || !bytes.Equal(body, p.Bytes(0, 10)) {
		t.Fatalf("matching If-Range: %v %v", err, resp)
	}
	if resp, _, err := get(t, s.URL(), map[string]string{"Range": "bytes=0-9", "If-Range": `"v0-other"`}); err == nil {
		t.Fatalf("failed If-Range got an answer: %v", resp.Status)
	}
	if resp, _, err := get(t, s.URL(), map[string]string{"Range": "bytes=0-9"}); err != nil || resp.StatusCode != 206 {
		t.Fatalf("no If-Range: %v %v", err, resp)
	}
}
