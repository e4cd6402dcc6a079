// Package fetch is a stateless HTTP(S) range client: it pins one version of a remote file
// (Probe) and reads byte ranges of exactly that version (Object.Fetch), or streams the
// whole body from servers that ignore ranges (Object.Stream).
//
// What it guarantees:
//   - A range is written to the caller's writer only after the answer was checked: 206,
//     Content-Range equal to the request, total size and validators equal to the pinned
//     ones, identity encoding, not multipart. Anything else is a typed error.
//   - Failures are retried (full-jitter backoff, Retry-After honoured up to a cap) and only
//     the missing remainder is asked for again; MaxAttempts bounds the attempts without
//     progress, or, with RetryUntilDeadline, the deadline of the caller's ctx does; a
//     no-progress watchdog ends stalled or trickling bodies, ResponseHeaderTimeout ends a
//     request on a dead kept-alive connection.
//     A connection that stayed silent through such a timeout is closed, and HTTP/2
//     connections are pinged when idle, so a retry never lands on a dead path again.
//   - A server shedding load (429/503) is asked less: the Client halves the requests it
//     lets through at once to that host and raises the bound again one step per run of
//     successes. Each host has its own bound of Connections.
//   - A 404/410 after Probe means the pinned version is gone: ErrGone, and RemoteChanged()
//     true. Unreachable is never reported as gone.
//   - Memory is one fixed buffer per transfer, never proportional to range or file size; an
//     unwanted (error) body is never read beyond a few KiB, a header block beyond 64 KiB.
//   - Secrets (URL userinfo, query values, user header values) never appear in errors or
//     log records; user headers and credentials never follow a redirect to another host;
//     redirects to link-local, unspecified or multicast addresses are refused before dialing.
//   - Mirrors reads one file from several servers at once (each version pinned by its own
//     Probe), weighted by the throughput each has shown, within each host's Connections,
//     failing over when one errs or stalls and dropping one whose version changes. With
//     published piece hashes (Metalink) every piece is verified in a buffer before any byte
//     of it is written; a bad piece is fetched from another mirror and its server demoted.
//     Without them a mirror serving other bytes of the same size cannot be detected.
//
// It imports the standard library only.
package fetch
