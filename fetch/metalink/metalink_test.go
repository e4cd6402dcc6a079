package metalink

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

func hexOf(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

const good = `<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <generator>test</generator>
  <file name="dir/weights.bin">
    <size>10</size>
    <hash type="md5">0123456789abcdef0123456789abcdef</hash>
    <hash type="sha-256">%s</hash>
    <pieces length="4" type="sha-256">
      <hash>%s</hash>
      <hash>%s</hash>
      <hash>%s</hash>
    </pieces>
    <url priority="2" location="de">http://b.example/w.bin</url>
    <url>https://c.example/w.bin</url>
    <url priority="1">http://a.example/w.bin?token=secret</url>
    <url priority="1">ftp://d.example/w.bin</url>
    <metaurl mediatype="torrent">http://e.example/w.torrent</metaurl>
  </file>
</metalink>`

func TestParse(t *testing.T) {
	doc := fmt.Sprintf(good, hexOf("0123456789"), hexOf("0123"), hexOf("4567"), hexOf("89"))
	m, err := Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 1 {
		t.Fatalf("%d files", len(m.Files))
	}
	f := m.Files[0]
	if f.Name != "dir/weights.bin" || f.Size != 10 || f.SHA256 != hexOf("0123456789") {
		t.Fatalf("file %+v", f)
	}
	if f.Pieces == nil || f.Pieces.Length != 4 || len(f.Pieces.SHA256) != 3 || f.Pieces.SHA256[2] != sha256.Sum256([]byte("89")) {
		t.Fatalf("pieces %+v", f.Pieces)
	}
	var urls []string
	for _, u := range f.URLs {
		urls = append(urls, u.URL)
	}
	if got := strings.Join(urls, " "); got != "http://a.example/w.bin?token=secret http://b.example/w.bin https://c.example/w.bin" {
		t.Fatalf("urls by priority: %s", got)
	}
	if got := strings.Join(f.Skipped, ", "); got != "hash md5, url ftp://d.example/…" {
		t.Fatalf("skipped: %s", got)
	}
}

func TestParseRefuses(t *testing.T) {
	h := hexOf("x")
	file := func(body string) string {
		return `<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="f">` + body + `</file></metalink>`
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"not xml", "hello", "not a Metalink 4"},
		{"metalink 3", `<metalink version="3.0" xmlns="http://www.metalinker.org/"><files/></metalink>`, "Metalink 3"},
		{"other namespace", `<metalink xmlns="urn:x"><file name="f"/></metalink>`, "namespace"},
		{"no file", `<metalink xmlns="urn:ietf:params:xml:ns:metalink"></metalink>`, "no <file>"},
		{"no name", `<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file><url>http://a/x</url></file></metalink>`, "no name"},
		{"no url", file(`<size>1</size><url>ftp://a/x</url>`), "no http or https"},
		{"bad size", file(`<size>-1</size><url>http://a/x</url>`), "not a byte count"},
		{"bad hash", file(`<hash type="sha-256">abc</hash><url>http://a/x</url>`), "not a sha-256"},
		{"two hashes", file(`<hash type="sha-256">` + h + `</hash><hash type="sha-256">` + hexOf("y") + `</hash><url>http://a/x</url>`), "two different"},
		{"pieces without size", file(`<pieces length="4" type="sha-256"><hash>` + h + `</hash></pieces><url>http://a/x</url>`), "without a <size>"},
		{"too few pieces", file(`<size>9</size><pieces length="4" type="sha-256"><hash>` + h + `</hash></pieces><url>http://a/x</url>`), "want 3"},
		{"bad piece length", file(`<size>9</size><pieces length="0" type="sha-256"></pieces><url>http://a/x</url>`), "positive"},
		{"bad priority", file(`<url priority="0">http://a/x</url>`), "priority"},
		{"unclosed", `<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="f">`, "not a Metalink 4"},
	} {
		_, err := Parse(strings.NewReader(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(fmt.Sprintf(good, hexOf("0123456789"), hexOf("0123"), hexOf("4567"), hexOf("89")))
	f.Add(`<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="f"><size>0</size><url>http://a/x</url></file></metalink>`)
	f.Fuzz(func(t *testing.T, doc string) {
		m, err := Parse(strings.NewReader(doc))
		if err != nil {
			return
		}
		for _, fl := range m.Files {
			if len(fl.URLs) == 0 || fl.Name == "" {
				t.Fatalf("accepted a file without URLs or name: %+v", fl)
			}
			if p := fl.Pieces; p != nil && (fl.Size < 0 || int64(len(p.SHA256)) != (fl.Size+p.Length-1)/p.Length) {
				t.Fatalf("accepted pieces that do not cover the size: %+v", fl)
			}
		}
	})
}
