// Package listing turns remote directory listings into entries: one directory level per
// call, so a caller lists a directory on its first lookup or readdir and never before.
//
// The API: Entry (one name of one directory), Lister (List(ctx, dir) for one level, dir
// "" for the root), and three Listers:
//   - HTTP (NewHTTP): HTML index pages of nginx, Apache (its ?C=N;O=D sort links are
//     dropped), lighttpd, python http.server and Caddy, read with golang.org/x/net/html;
//     nginx autoindex_format json and xml, recognised by Content-Type or by the body.
//   - S3 (NewS3): s3://BUCKET/PREFIX/ through ListObjectsV2 with delimiter "/", 1,000 keys a
//     page, anonymous or SigV4-signed with aws-sdk-go-v2's signer.
//   - Manifest (ParseManifest): lines PATH<TAB>URL[<TAB>SIZE[<TAB>SHA256]], held compactly
//     in memory, directories implied by the paths.
//
// What a caller may rely on:
//   - Names are single path components: never "", "." or "..", never with '/' or NUL.
//     Anything else is skipped, and each skip reason is logged once per listing with a count
//     and one quoted example (a page of 100,000 bad links costs one record).
//   - One entry per name, sorted by name. Duplicates: a directory beats a file of the same
//     name; among entries of one kind, the first the source gave wins (for a manifest: the
//     first line). A repeated link with the same URL is the same entry and is not warned.
//   - Size is exact only where SizeExact says so: nginx json/xml, S3 and a manifest's
//     declared size. Sizes and times printed on an HTML page are hints ("12M"): the opener
//     probes the file before trusting them.
//   - HTML links are kept only when they are on the page's origin (scheme, host, port) and
//     name a direct child of the directory; links with '?' or '#' are dropped. Names are
//     decoded from the href's path, component by component, so Apache's and lighttpd's
//     escapes (and an unescaped '%') give the same name.
//   - Listing requests only ever GET directories (HTTP) or the bucket's list API (S3): a
//     listing never fetches a file body.
//   - Every input is bounded: the body read (Options.MaxBody, 64 MiB), entries per
//     directory (MaxEntries, 1,000,000), directory depth (MaxDepth, 64), one List call
//     (Timeout, 2 min), redirects (10 hops, a loop ends at once), S3 pages (a repeated or
//     endless continuation token is an error). Overruns are ErrTooLarge, ErrRedirect or
//     ErrBadListing errors, never a partial listing presented as whole.
//   - Errors and log records carry redacted URLs only (fetch.Redact).
//
// Signing S3 object GETs: an S3 lister signs its own list requests. For the GETs of the
// objects it offers three hooks, all backed by the same credentials: SignRequest(req)
// signs one request in place (for a per-attempt hook in the fetch engine), Transport(base)
// is an http.RoundTripper that signs each request to the bucket's host, and Presign gives
// a query-signed URL that the fetch engine can use today, as it is, for up to 7 days.
// None of them signs a request to another host.
//
// The listers hold no listing between calls and are safe for concurrent use. The fetch
// core stays standard-library only: this package may import fetch, x/net/html and the
// AWS signer, never cache or fs.
package listing
