package fetch

import (
	"sync"
	"time"
)

// tokenBucket is a byte-rate limiter shared by all requests of a Client. Callers take tokens
// per buffer after receiving it; the bucket may go into debt and the caller then sleeps for
// the debt, which keeps the long-run rate exact without a goroutine. Safe for concurrent use.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64 // maximum stored tokens
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int64) *tokenBucket {
	// A burst of ~1/8 s (between 4 KiB and one copy buffer) keeps the output smooth.
	burst := min(max(float64(rate)/8, 4<<10), copyBufSize)
	return &tokenBucket{rate: float64(rate), burst: burst, tokens: burst, last: time.Now()}
}

// chunk is the largest read a limited copy should do, so that one take never sleeps long.
func (b *tokenBucket) chunk() int { return int(b.burst) }

// take removes n tokens and returns how long the caller must wait before using them.
func (b *tokenBucket) take(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
