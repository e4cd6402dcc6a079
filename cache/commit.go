package cache

import (
	"encoding/binary"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// committer makes written chunks durable and visible, in the one order that
// keeps the index honest: the bytes are already in the data file (pwrite),
// then fdatasync, then the chunk records are committed to bbolt, then the
// present bits flip and the waiters wake. A crash anywhere in between leaves
// an index that under-reports, never one that over-reports.
//
// It is a single goroutine per File doing group commit: each round takes
// every chunk finished since the previous round and pays for one fdatasync
// and one bbolt transaction, so 8-16 connections streaming at hundreds of
// MB/s cost a few syncs per second, not one per chunk.
type committer struct {
	s *store
	// durable hands each round's chunks to the store's owner: err nil
	// means they are synced and recorded; else none of them is.
	durable func(batch []commitRec, err error)

	mu      sync.Mutex
	pending []commitRec // chunks written, waiting for the next round
	spare   []commitRec // the previous round's slice, reused

	wake     chan struct{} // capacity 1: "pending is not empty"
	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when run returns
}

// commitRec is one fully written chunk and its index record: the CRC-32C
// of each of its blocks (see blockSize), big-endian, in order.
type commitRec struct {
	i   int64
	rec []byte
}

func newCommitter(s *store, durable func(batch []commitRec, err error)) *committer {
	return &committer{
		s:       s,
		durable: durable,
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// add queues chunk i (written: its bytes are all in the data file) for the
// next round, which commits it or fails it (see chunkTable).
func (c *committer) add(i int64, rec []byte) {
	c.mu.Lock()
	c.pending = append(c.pending, commitRec{i, rec})
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
			c.round()
		case <-c.quit:
			// Writers are finished (Close waited for them): commit what
			// they left so the next session need not fetch it again.
			c.round()
			return
		}
	}
}

// stop commits what is pending and ends run; later calls only wait for
// that. Callers must ensure no more add calls happen.
func (c *committer) stop() {
	c.stopOnce.Do(func() { close(c.quit) })
	<-c.done
}

func (c *committer) round() {
	c.mu.Lock()
	batch := c.pending
	c.pending = c.spare[:0]
	c.mu.Unlock()
	if len(batch) == 0 {
		c.spare = batch
		return
	}
	s := c.s
	var err error
	stopped := s.commitsStopped.Load()
	if stopped {
		// After a failed sync or index commit nothing more is committed
		// this session: Linux reports a writeback error to one fdatasync
		// only, so a later sync that succeeds proves nothing about pages
		// that were dropped, and the index must never over-report. A
		// failed write (ENOSPC) is not such a failure: it stops caching,
		// but the chunks written whole before it are still committed by a
		// sync that succeeds (pending holds only chunks whose every write
		// succeeded).
		err = s.uncached()
	} else if serr := s.data.Sync(); serr != nil {
		err = &diskError{op: "sync data", err: serr}
	} else if uerr := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		// bbolt keeps references to keys and values until the commit,
		// so each key gets its own bytes (one allocation per round); each
		// value is its writer's record, which nobody touches again.
		keys := make([]byte, 8*len(batch))
		for n, r := range batch {
			k := keys[8*n : 8*n+8 : 8*n+8]
			binary.BigEndian.PutUint64(k, uint64(r.i))
			if err := b.Put(k, r.rec); err != nil {
				return err
			}
		}
		return nil
	}); uerr != nil {
		err = &diskError{op: "commit index", err: uerr}
	}
	if err != nil {
		if !stopped {
			s.commitsStopped.Store(true)
		}
		s.degrade(err)
	}
	c.durable(batch, err)
	for n := range batch {
		batch[n].rec = nil // let the record go with the transaction
	}
	c.spare = batch
}
