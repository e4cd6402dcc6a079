package listing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"rangefs/fetch"
	"rangefs/fetch/listing/listingtest"
)

// fakeS3 is gofakes3 in process on loopback, with every request and its Authorization
// header recorded.
type fakeS3 struct {
	url  string
	reqs *requestLog
	mu   sync.Mutex
	auth []string // Authorization of each request, "" when unsigned
	tok  []string // X-Amz-Security-Token of each request
}

func (f *fakeS3) auths() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.auth), slices.Clone(f.tok)
}

// newFakeS3 creates bucket "bkt" holding objects.
func newFakeS3(t *testing.T, objects map[string][]byte) *fakeS3 {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	for k, v := range objects {
		if _, err := backend.PutObject("bkt", k, map[string]string{}, bytes.NewReader(v), int64(len(v)), nil); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	f := &fakeS3{reqs: &requestLog{}}
	h := faker.Server()
	s := serve(t, f.reqs.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.tok = append(f.tok, r.Header.Get("X-Amz-Security-Token"))
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	})))
	f.url = s.URL
	return f
}

// treeObjects is the test tree as S3 objects below prefix, with the bytes makeTree wrote.
func treeObjects(t *testing.T, prefix string) (map[string][]byte, []treeFile) {
	t.Helper()
	dir, files := makeTree(t)
	m := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.path))
		if err != nil {
			t.Fatal(err)
		}
		m[prefix+f.path] = b
	}
	return m, files
}

// An anonymous bucket listing gives the tree exactly, with exact sizes, mtimes and ETags,
// makes list requests only, and each object URL serves the object's bytes, ranged, to
// the fetch engine with the listed ETag and size.
func TestS3AnonymousTree(t *testing.T) {
	listingtest.NoAWSEnv(t)
	objs, files := treeObjects(t, "data/")
	objs["outside.txt"] = []byte("not below the prefix")
	f := newFakeS3(t, objs)
	l, err := NewS3(testCtx(t), "s3://bkt/data", S3Options{Endpoint: f.url, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	got := walk(t, testCtx(t), l)
	checkTree(t, got, files, true)
	reqs := f.reqs.all()
	if len(reqs) != 112 {
		t.Errorf("%d requests for 112 directories", len(reqs))
	}
	for _, r := range reqs {
		if !strings.HasPrefix(r, "GET /bkt?") || !strings.Contains(r, "list-type=2") || !strings.Contains(r, "delimiter=%2F") {
			t.Errorf("not a ListObjectsV2 request: %s", r)
		}
	}
	if auth, _ := f.auths(); slices.ContainsFunc(auth, func(a string) bool { return a != "" }) {
		t.Error("an anonymous lister signed a request")
	}
	for _, p := range []string{"special/café.bin", "special/100%.txt", "special/q?mark.txt", "special/big.bin", "d1/e2/f3.bin"} {
		e := got[p]
		if e.ETag == "" || e.ModTime.IsZero() {
			t.Errorf("%s: no ETag or mtime: %+v", p, e)
		}
		if want := "s3://bkt/data/" + p[:strings.LastIndexByte(p, '/')+1]; got[p[:strings.LastIndexByte(p, '/')]].URL != want {
			t.Errorf("directory URL %q, want %q", got[p[:strings.LastIndexByte(p, '/')]].URL, want)
		}
		c := fetch.NewClient(fetch.Options{})
		o, err := c.Probe(testCtx(t), e.URL)
		if err != nil {
			t.Fatalf("probe %s: %v", e.URL, err)
		}
		if o.Size != e.Size || o.ETag != e.ETag || !o.Ranges {
			t.Errorf("%s: probe size %d ETag %s ranges %v; listing size %d ETag %s", p, o.Size, o.ETag, o.Ranges, e.Size, e.ETag)
		}
		var buf bytes.Buffer
		off := e.Size / 3
		if err := o.Fetch(testCtx(t), off, e.Size-off, &buf); err != nil {
			t.Fatalf("fetch %s: %v", p, err)
		}
		if !bytes.Equal(buf.Bytes(), objs["data/"+p][off:]) {
			t.Errorf("%s: ranged bytes differ", p)
		}
		c.Close()
	}
}

// 2,500 keys and 3 prefixes take three pages of 1,000, linked by continuation tokens.
func TestS3Pagination(t *testing.T) {
	listingtest.NoAWSEnv(t)
	objs := map[string][]byte{}
	for i := range 2500 {
		objs[fmt.Sprintf("many/k%04d", i)] = []byte{byte(i)}
	}
	for _, d := range []string{"a", "b", "c"} {
		objs["many/"+d+"/x"] = []byte("x")
	}
	f := newFakeS3(t, objs)
	l, err := NewS3(testCtx(t), "s3://bkt/", S3Options{Endpoint: f.url, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.List(testCtx(t), "many")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2503 || !es[0].IsDir || es[0].Name != "a" || es[3].Name != "k0000" || es[2502].Size != 1 {
		t.Fatalf("%d entries: %v…", len(es), names(es[:5]))
	}
	reqs := f.reqs.all()
	if len(reqs) != 3 || strings.Contains(reqs[0], "continuation-token") ||
		!strings.Contains(reqs[1], "continuation-token=") || !strings.Contains(reqs[2], "continuation-token=") {
		t.Errorf("requests: %v", reqs)
	}
	for _, r := range reqs {
		if !strings.Contains(r, "max-keys=1000") {
			t.Errorf("page size not asked: %s", r)
		}
	}
}

// Keys with //, /./ or /../ are skipped with one warning; the folder marker is no entry.
func TestS3BadKeys(t *testing.T) {
	listingtest.NoAWSEnv(t)
	f := newFakeS3(t, map[string][]byte{
		"p/ok": []byte("1"), "p/": nil, "p//x": []byte("2"), "p/./y": []byte("3"), "p/../z": []byte("4"),
		"p/sub/ok": []byte("5"), "p/sp ace+plus%.txt": []byte("6"),
	})
	log, lb := newLog()
	l, _ := NewS3(testCtx(t), "s3://bkt/p/", S3Options{Endpoint: f.url, Anonymous: true, Options: Options{Logger: log}})
	es, err := l.List(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(es); !slices.Equal(got, []string{"ok", "sp ace+plus%.txt", "sub/"}) {
		t.Fatalf("entries %v", got)
	}
	if n := lb.count("msg=\"listing: skipped entries\""); n != 1 || lb.count("count=3") != 1 {
		t.Errorf("want one warning counting 3 keys:\n%s", lb)
	}
	resp, err := http.Get(byName(t, es)["sp ace+plus%.txt"].URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "6" {
		t.Errorf("escaped key URL served %q", b)
	}
}

var sigv4Header = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([A-Z0-9]+)/(\d{8})/([a-z0-9-]+)/s3/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$`)

// checkSigned asserts every request carried a well-formed SigV4 Authorization for key
// and region, signing host, date and payload hash.
func checkSigned(t *testing.T, f *fakeS3, key, region, token string) {
	t.Helper()
	auth, toks := f.auths()
	if len(auth) == 0 {
		t.Fatal("no requests")
	}
	for i, a := range auth {
		m := sigv4Header.FindStringSubmatch(a)
		if m == nil {
			t.Fatalf("request %d: Authorization %q is not SigV4", i, a)
		}
		if m[1] != key || m[2] != time.Now().UTC().Format("20060102") && m[2] != time.Now().UTC().Add(-time.Hour).Format("20060102") || m[3] != region {
			t.Errorf("request %d: credential scope %s/%s/%s, want %s/today/%s", i, m[1], m[2], m[3], key, region)
		}
		for _, h := range []string{"host", "x-amz-content-sha256", "x-amz-date"} {
			if !slices.Contains(strings.Split(m[4], ";"), h) {
				t.Errorf("request %d: %s not signed (%s)", i, h, m[4])
			}
		}
		if (token != "") != slices.Contains(strings.Split(m[4], ";"), "x-amz-security-token") || toks[i] != token {
			t.Errorf("request %d: session token %q signed as %s, want %q", i, toks[i], m[4], token)
		}
	}
}

// Credentials from the environment sign every list request.
func TestS3SignedFromEnvironment(t *testing.T) {
	listingtest.NoAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENVTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret/env")
	t.Setenv("AWS_SESSION_TOKEN", "session-token-1")
	t.Setenv("AWS_REGION", "eu-central-1")
	objs, files := treeObjects(t, "")
	f := newFakeS3(t, objs)
	l, err := NewS3(testCtx(t), "s3://bkt", S3Options{Endpoint: f.url})
	if err != nil {
		t.Fatal(err)
	}
	if l.Region() != "eu-central-1" {
		t.Errorf("region %s", l.Region())
	}
	checkTree(t, walk(t, testCtx(t), l), files, true)
	checkSigned(t, f, "AKIDENVTEST", "eu-central-1", "session-token-1")
}

// A profile of the shared files (AWS_PROFILE) gives keys and region.
func TestS3SignedFromSharedFiles(t *testing.T) {
	listingtest.NoAWSEnv(t)
	home := os.Getenv("HOME")
	os.WriteFile(filepath.Join(home, "credentials"), []byte("[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = d\n\n[team]\naws_access_key_id = AKIDTEAM\naws_secret_access_key = t\n"), 0o600)
	os.WriteFile(filepath.Join(home, "config"), []byte("[profile team]\nregion = ap-south-1\n"), 0o600)
	t.Setenv("AWS_PROFILE", "team")
	f := newFakeS3(t, map[string][]byte{"a/b": []byte("x")})
	l, err := NewS3(testCtx(t), "s3://bkt/a/", S3Options{Endpoint: f.url})
	if err != nil {
		t.Fatal(err)
	}
	if es, err := l.List(testCtx(t), ""); err != nil || len(es) != 1 {
		t.Fatalf("%v %v", err, es)
	}
	checkSigned(t, f, "AKIDTEAM", "ap-south-1", "")
	// The Profile option beats AWS_PROFILE.
	f2 := newFakeS3(t, map[string][]byte{"a/b": []byte("x")})
	l2, err := NewS3(testCtx(t), "s3://bkt/a/", S3Options{Endpoint: f2.url, Profile: "default"})
	if err != nil {
		t.Fatal(err)
	}
	l2.List(testCtx(t), "")
	checkSigned(t, f2, "AKIDDEFAULT", "us-east-1", "")
}

func TestS3NoCredentials(t *testing.T) {
	listingtest.NoAWSEnv(t)
	_, err := NewS3(testCtx(t), "s3://bkt/", S3Options{Endpoint: "http://127.0.0.1:9"})
	if !errors.Is(err, errNoCredentials) || !strings.Contains(err.Error(), "anonymous") {
		t.Fatalf("err = %v, want the no-credentials error pointing at anonymous access", err)
	}
}

// AWS's published example of a signed GET (the S3 "GET Object" example of "Signature
// Calculations for the Authorization Header") comes out byte for byte: the signature is
// the AWS signer's, and our escaping and headers feed it what S3 expects.
func TestSigV4MatchesAWSExample(t *testing.T) {
	base, _ := url.Parse("https://examplebucket.s3.amazonaws.com/")
	s := &S3{base: base, region: "us-east-1", auth: &sigv4{
		creds:  credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
		signer: v4.NewSigner(),
		now:    func() time.Time { return time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC) },
	}}
	req, _ := http.NewRequest(http.MethodGet, s.ObjectURL("test.txt"), nil)
	req.Header.Set("Range", "bytes=0-9")
	if err := s.SignRequest(req); err != nil {
		t.Fatal(err)
	}
	const want = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
	if got := req.Header.Get("Authorization"); got != want {
		t.Errorf("Authorization\n got %s\nwant %s", got, want)
	}
	// Another host is never signed, by SignRequest or by the Transport.
	other, _ := http.NewRequest(http.MethodGet, "https://elsewhere.example/test.txt", nil)
	s.SignRequest(other)
	if other.Header.Get("Authorization") != "" {
		t.Error("signed a request to another host")
	}
}

// The Transport signs a clone of each request to the bucket and nothing else; Presign
// gives a query-signed URL.
func TestS3TransportAndPresign(t *testing.T) {
	listingtest.NoAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTRANSPORT")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	f := newFakeS3(t, map[string][]byte{"obj": []byte("0123456789")})
	other := newFakeS3(t, nil)
	l, err := NewS3(testCtx(t), "s3://bkt/", S3Options{Endpoint: f.url})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: l.Transport(nil)}
	req, _ := http.NewRequest(http.MethodGet, l.ObjectURL("obj"), nil)
	req.Header.Set("Range", "bytes=2-5")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(b) != "2345" {
		t.Errorf("ranged GET: %d %q", resp.StatusCode, b)
	}
	if req.Header.Get("Authorization") != "" {
		t.Error("the Transport modified the caller's request")
	}
	checkSigned(t, f, "AKIDTRANSPORT", "us-east-1", "")
	if a, _ := f.auths(); !strings.Contains(a[0], "range") {
		t.Errorf("Range not signed: %s", a[0])
	}
	r2, _ := http.NewRequest(http.MethodGet, other.url+"/bkt/obj", nil)
	if resp, err := hc.Do(r2); err == nil {
		resp.Body.Close()
	}
	if a, _ := other.auths(); len(a) != 1 || a[0] != "" {
		t.Errorf("another host got %q", a)
	}
	signed, err := l.Presign(testCtx(t), l.ObjectURL("obj"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.Parse(signed)
	for _, k := range []string{"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Date"} {
		if q.Query().Get(k) == "" {
			t.Errorf("presigned URL lacks %s", k)
		}
	}
	if q.Query().Get("X-Amz-Expires") != "3600" || !strings.HasPrefix(q.Query().Get("X-Amz-Credential"), "AKIDTRANSPORT/") {
		t.Errorf("presigned query %v", q.Query())
	}
	if _, err := l.Presign(testCtx(t), l.ObjectURL("obj"), 8*24*time.Hour); err == nil {
		t.Error("presigned for more than 7 days")
	}
	resp, err = http.Get(signed)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "0123456789" {
		t.Errorf("presigned GET: %q", b)
	}
}

// A hostile or broken list API: endless tokens end at the page cap, a repeated token or
// a truncated page without one is malformed, and an S3 error document is reported with
// its code (a wrong region names the right one).
func TestS3HostileListAPI(t *testing.T) {
	listingtest.NoAWSEnv(t)
	var mode string
	var pages int
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pages++
		tok := ""
		switch mode {
		case "endless":
			tok = fmt.Sprintf("<NextContinuationToken>t%d</NextContinuationToken>", pages)
		case "repeat":
			tok = "<NextContinuationToken>same</NextContinuationToken>"
		case "region":
			w.Header().Set("X-Amz-Bucket-Region", "us-west-2")
			w.WriteHeader(http.StatusMovedPermanently)
			w.Write([]byte(`<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.` + "\x1b[31m" + `</Message></Error>`))
			return
		case "nobucket":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>`))
			return
		case "garbage":
			w.Write([]byte(`<ListBucketResult><Contents><Key>a</Key><Size>nope</Size></Contents>`))
			return
		}
		fmt.Fprintf(w, `<ListBucketResult><IsTruncated>true</IsTruncated>%s<Contents><Key>k%d</Key><Size>1</Size></Contents></ListBucketResult>`, tok, pages)
	}))
	l, _ := NewS3(testCtx(t), "s3://bkt/", S3Options{Endpoint: s.URL, Anonymous: true, MaxPages: 5})
	for m, check := range map[string]func(error) bool{
		"endless": func(err error) bool { return errors.Is(err, ErrTooLarge) && pages == 5 },
		"repeat":  func(err error) bool { return errors.Is(err, ErrBadListing) && pages == 2 },
		"notoken": func(err error) bool { return errors.Is(err, ErrBadListing) && pages == 1 },
		"garbage": func(err error) bool { return errors.Is(err, ErrBadListing) },
		"nobucket": func(err error) bool {
			return errors.Is(err, iofs.ErrNotExist) && strings.Contains(err.Error(), "NoSuchBucket")
		},
		"region": func(err error) bool {
			return strings.Contains(err.Error(), "PermanentRedirect") && strings.Contains(err.Error(), "region us-west-2") &&
				!strings.Contains(err.Error(), "\x1b")
		},
	} {
		mode, pages = m, 0
		if _, err := l.List(testCtx(t), ""); !check(err) {
			t.Errorf("%s: err = %v after %d pages", m, err, pages)
		}
	}
}

func TestS3URLs(t *testing.T) {
	listingtest.NoAWSEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		uri      string
		o        S3Options
		key, url string
	}{
		{"s3://bkt/p/", S3Options{Anonymous: true, Region: "us-west-2"}, "p/a b+c%.txt", "https://bkt.s3.us-west-2.amazonaws.com/p/a%20b%2Bc%25.txt"},
		{"s3://my.bkt/", S3Options{Anonymous: true}, "x/é", "https://s3.us-east-1.amazonaws.com/my.bkt/x/%C3%A9"},
		{"s3://bkt", S3Options{Anonymous: true, Endpoint: "http://127.0.0.1:9000"}, "k", "http://127.0.0.1:9000/bkt/k"},
		{"s3://bkt", S3Options{Anonymous: true, Endpoint: "https://minio.example/s3/"}, "k~", "https://minio.example/s3/bkt/k~"},
		{"s3://bkt", S3Options{Anonymous: true, Endpoint: "https://storage.example", VirtualHost: true}, "k", "https://bkt.storage.example/k"},
	} {
		l, err := NewS3(ctx, tc.uri, tc.o)
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		if got := l.ObjectURL(tc.key); got != tc.url {
			t.Errorf("%s %q: %s, want %s", tc.uri, tc.key, got, tc.url)
		}
	}
	for _, bad := range []string{"s3://", "http://bkt/", "s3://bkt/?x=1", "s3://u:p@bkt/", "bkt/p"} {
		if _, err := NewS3(ctx, bad, S3Options{Anonymous: true}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewS3(ctx, "s3://bkt/", S3Options{Anonymous: true, Endpoint: "ftp://x"}); err == nil {
		t.Error("ftp endpoint accepted")
	}
}
