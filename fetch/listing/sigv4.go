package listing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// emptySHA256 is the SHA-256 of an empty body: every request we sign is a GET or HEAD.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// sigv4 signs with aws-sdk-go-v2's SigV4 signer; the signature is never computed here.
type sigv4 struct {
	creds  aws.CredentialsProvider // cached; refreshes expiring credentials itself
	signer *v4.Signer
	now    func() time.Time // time.Now; tests pin it to check AWS's published example
}

// loadSigV4 finds credentials the way the AWS CLI does, minus instance metadata (see
// S3Options.Anonymous), and retrieves them once so that a missing or broken setup fails
// now, with a message that says what to do.
func loadSigV4(ctx context.Context, profile, region string) (*sigv4, string, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
	}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("listing: AWS configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, "", errNoCredentials
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, "", fmt.Errorf("%w (%v)", errNoCredentials, err)
	}
	return &sigv4{creds: cfg.Credentials, signer: v4.NewSigner(), now: time.Now},
		firstNonEmpty(cfg.Region, "us-east-1"), nil
}

var errNoCredentials = errors.New("listing: no usable AWS credentials: set AWS_ACCESS_KEY_ID and " +
	"AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or a profile in the shared credentials file " +
	"(AWS_PROFILE); for a public bucket, use anonymous access")

// SignRequest signs req (a GET or HEAD without body) for this bucket with SigV4, in place.
// It does nothing when the lister is anonymous, or when req goes to another host than the
// bucket's: a signature is never handed to a host it was not made for. Signing adds
// X-Amz-Date and X-Amz-Content-Sha256 and covers every header already set (Range,
// If-Range…), so call it last, once per attempt: a signature is valid for 15 minutes.
func (s *S3) SignRequest(req *http.Request) error {
	if s.auth == nil || !strings.EqualFold(req.URL.Host, s.base.Host) {
		return nil
	}
	if req.Body != nil && req.Body != http.NoBody {
		return errors.New("listing: SignRequest signs requests without a body only")
	}
	creds, err := s.auth.creds.Retrieve(req.Context())
	if err != nil {
		return fmt.Errorf("listing: AWS credentials: %w", err)
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	return s.auth.signer.SignHTTP(req.Context(), creds, req, emptySHA256, "s3", s.region, s.auth.now(),
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }) // S3 paths are escaped once
}

// Transport returns a RoundTripper that signs each request to the bucket's host (on a
// clone: the caller's request is not modified) and passes it to base (nil =
// http.DefaultTransport). Given to an HTTP client, it signs every attempt, retry and
// redirect hop afresh; requests to other hosts pass unsigned.
func (s *S3) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &signingTransport{s: s, base: base}
}

type signingTransport struct {
	s    *S3
	base http.RoundTripper
}

func (t *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.s.auth == nil || !strings.EqualFold(req.URL.Host, t.s.base.Host) {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	if err := t.s.SignRequest(r); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(r)
}

// Presign returns objectURL with a SigV4 query signature valid for expires (at most 7
// days, S3's limit), for clients that cannot sign each request. The query is a secret
// (fetch redacts it) and changes on every call, so cache identities must leave it out.
// A presigned GET does not authorise HEAD: S3 answers a HEAD with it 403. Anonymous
// listers return objectURL unchanged.
func (s *S3) Presign(ctx context.Context, objectURL string, expires time.Duration) (string, error) {
	if s.auth == nil {
		return objectURL, nil
	}
	if expires <= 0 || expires > 7*24*time.Hour {
		return "", fmt.Errorf("listing: presign expiry %v is not within (0, 7 days]", expires)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, objectURL, nil)
	if err != nil {
		return "", fmt.Errorf("listing: cannot presign an invalid URL")
	}
	if !strings.EqualFold(req.URL.Host, s.base.Host) {
		return "", fmt.Errorf("listing: will not presign a URL of another host than the bucket's")
	}
	q := req.URL.Query()
	q.Set("X-Amz-Expires", strconv.FormatInt(int64(expires/time.Second), 10))
	req.URL.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	creds, err := s.auth.creds.Retrieve(ctx)
	if err != nil {
		return "", fmt.Errorf("listing: AWS credentials: %w", err)
	}
	signed, _, err := s.auth.signer.PresignHTTP(ctx, creds, req, "UNSIGNED-PAYLOAD", "s3", s.region, s.auth.now(),
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	return signed, err
}
