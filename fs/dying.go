package fs

import (
	"bufio"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// The kernel interrupts a FUSE request on every signal its caller gets, a
// handled one with SA_RESTART too, and cannot restart a read the daemon
// failed with EINTR. How long a read goes on after an interrupt depends on
// what its caller asked for:
//   - A handle opened with O_DIRECT: after interruptGrace the read fails
//     with EINTR, so a program that handles Ctrl-C (dd) gets it back soon.
//   - Any other handle, which expects what a buffered read does on a local
//     disk: the read goes on until its bytes arrive or the op timeout,
//     unless the signal is ending the process (cat's Ctrl-C, kill). The
//     kernel waits for our answer even then, so that is ended at once.
//     Reads of files not yet fully cached are direct I/O by default
//     (tree.directIO), and an interval timer or SIGCHLD must not make them
//     fail where a page-cache read would not.

// followInterrupt ends a read's wait (cancel, which ends read) after an
// interrupt of its FUSE request ctx, by the rule above; tid is the caller's
// thread. Whatever it started after an interrupt ends with read; the
// returned stop, called at the end of the read, stops waiting for one.
func followInterrupt(ctx context.Context, tid uint32, userDirect bool, read context.Context, cancel context.CancelFunc) (stop func() bool) {
	done := read.Done()
	return context.AfterFunc(ctx, func() {
		if userDirect {
			graceThenCancel(done, cancel)
			return
		}
		// Checked at the interrupt, then while the read waits: a fatal
		// signal after a handled one brings no second interrupt.
		t := time.NewTicker(dyingPoll)
		defer t.Stop()
		for {
			dead, ok := dying(tid)
			if !ok {
				// Cannot tell (the thread is out of sight): as O_DIRECT.
				graceThenCancel(done, cancel)
				return
			}
			if dead {
				cancel()
				return
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
}

// graceThenCancel cancels after interruptGrace, unless done closes first.
func graceThenCancel(done <-chan struct{}, cancel context.CancelFunc) {
	t := time.NewTimer(interruptGrace)
	defer t.Stop()
	select {
	case <-t.C:
		cancel()
	case <-done:
	}
}

// dyingPoll is how often an interrupted read that goes on checks whether its
// caller is being killed.
const dyingPoll = 100 * time.Millisecond

// keepsRunning holds the signals whose default action does not end a
// process: SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG and
// SIGWINCH (signal n is bit n-1, as in /proc's masks).
const keepsRunning = 1<<(17-1) | 1<<(18-1) | 1<<(19-1) | 1<<(20-1) | 1<<(21-1) | 1<<(22-1) | 1<<(23-1) | 1<<(28-1)

// dying reports whether thread tid has a signal pending that ends its
// process: one neither blocked, caught nor ignored, whose default action is
// to terminate. That includes SIGKILL, which the kernel adds to every
// thread of a process that a fatal signal is ending. ok is false when
// /proc does not say (tid 0, a thread gone or in another PID namespace).
func dying(tid uint32) (dead, ok bool) {
	if tid == 0 {
		return false, false
	}
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return false, false
	}
	defer f.Close()
	return parseDying(f)
}

// parseDying is dying's reading of a /proc/PID/status file.
func parseDying(f io.Reader) (dead, ok bool) {
	masks := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, found := strings.Cut(sc.Text(), ":")
		switch name {
		case "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt":
		default:
			continue
		}
		if !found {
			return false, false
		}
		m, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
		if err != nil {
			return false, false
		}
		masks[name] = m
	}
	if sc.Err() != nil || len(masks) != 5 {
		return false, false
	}
	pending := masks["SigPnd"] | masks["ShdPnd"]
	const sigkill = 1 << (9 - 1)
	ends := pending &^ (masks["SigBlk"] | masks["SigIgn"] | masks["SigCgt"] | keepsRunning)
	return pending&sigkill != 0 || ends != 0, true
}
