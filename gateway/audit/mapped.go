package audit

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// mapped is an open recording written through a shared memory mapping: a
// write is a copy into the page cache, which outlives a crash of the
// gateway, with no system call. The file is extended ahead of the writes;
// what lies past the last write reads as zero bytes, which readers take as
// the end, until close cuts the file to its length.
//
// Its first writeLimit bytes are written with write(2) instead, into the
// page cache as well, and the file is mapped only when it grows past them:
// most sessions are short, and for them a mapping (made, its pages made
// present, unmade: the unmapping interrupts every other CPU running the
// gateway to flush its TLB) costs far more than a few system calls.
//
// The first write to a page of the file costs the kernel a few
// microseconds (a page to find, zero and account for). So that the writer
// does not pay it on the data path, a preparer (see preparer) makes the
// pages ahead of the writer present and writable in the background, and
// grows the file before the writer needs it to.
type mapped struct {
	f *os.File
	// mu is held shared to use m, and exclusively to replace it (grow) or
	// to close.
	mu     sync.RWMutex
	m      []byte // the mapping, from the file's start; past size, address space only; nil until off passes writeLimit
	size   int    // the file's length: the part of m that may be used (off while unmapped)
	closed bool   // under mu

	off   int          // bytes written; the writer's
	ready atomic.Int64 // bytes of m made present by the preparer
	asked atomic.Bool  // a preparation is queued
	prep  *preparer    // nil: the writer takes its own page faults
}

// Sizes of the file: the first one, and the most one growth adds, so that
// a long session's file grows by bounded steps.
const (
	mapInitial = 64 << 10
	mapStep    = 64 << 20
)

// writeLimit is how long the file grows by write(2) before it is mapped.
const writeLimit = 64 << 10

var errMappedClosed = errors.New("recording closed")

// mapReserve is the least address space a mapping reserves, so that the
// file grows under it without a new mapping (whose pages would have to be
// made present again) until it is that long; smaller in tests.
var mapReserve = 64 << 20

// createMapped creates the file at path, which must not exist.
func createMapped(path string, prep *preparer) (*mapped, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating recording: %w", err)
	}
	return &mapped{f: f, prep: prep}, nil
}

// write appends b. Only the session's writer calls it.
func (w *mapped) write(b []byte) error {
	w.mu.RLock()
	if w.m == nil && w.off+len(b) <= writeLimit {
		err := errMappedClosed
		if !w.closed {
			_, err = w.f.WriteAt(b, int64(w.off))
		}
		w.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("writing recording: %w", err)
		}
		w.off += len(b)
		w.size = w.off // no other goroutine uses w while it is unmapped
		return nil
	}
	if w.off+len(b) > w.size || w.m == nil {
		w.mu.RUnlock()
		w.mu.Lock()
		var err error
		if w.off+len(b) > w.size || w.m == nil { // unless the preparer just did
			err = w.grow(w.off + len(b))
		}
		w.mu.Unlock()
		if err != nil {
			return fmt.Errorf("writing recording: %w", err)
		}
		w.mu.RLock()
	}
	err := copyIn(w.m[w.off:], b)
	w.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("writing recording: %w", err)
	}
	w.off += len(b)
	if int64(w.off+w.ahead()/2) > w.ready.Load() {
		w.ask()
	}
	return nil
}

// ahead is how far past the last write the preparer works: as much as has
// been written, between 64 KiB and 256 KiB, which keeps it ahead of a
// session writing megabytes a second while bounding the page cache that
// many open sessions hold in advance.
func (w *mapped) ahead() int { return min(max(w.off, mapInitial), 256<<10) }

// ask queues a preparation up to ahead past the last write, unless one is
// queued.
func (w *mapped) ask() {
	if w.prep == nil || w.asked.Swap(true) {
		return
	}
	select {
	case w.prep.queue <- prepRequest{w: w, from: w.off, until: w.off + w.ahead()}:
	default:
		w.asked.Store(false) // the preparer is behind: the writer faults
	}
}

// copyIn copies b into dst, a mapping. A fault (the file cut short behind
// the gateway's back, a full disk, an I/O error on a page) is returned as
// an error instead of crashing the gateway.
func copyIn(dst, b []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("memory fault on the mapped file: %v", r)
		}
	}()
	copy(dst, b)
	return nil
}

// grow extends the file to at least need bytes, and its mapping if the
// file outgrows it; the caller holds mu exclusively.
func (w *mapped) grow(need int) error {
	if w.closed {
		return errMappedClosed
	}
	size := max(mapInitial, w.size+min(w.size, mapStep))
	for size < need {
		size += mapStep
	}
	size = (size + mapInitial - 1) &^ (mapInitial - 1) // write(2) left it at any length
	// A sparse file: blocks are taken as pages are written, which costs
	// less than converting reserved ones (fallocate); a full disk then
	// shows as a fault of the copy, which copyIn returns.
	if err := w.f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("extending to %d bytes: %w", size, err)
	}
	if size > len(w.m) {
		// Address space past the end of the file costs nothing until
		// it is touched, and nothing touches it: m is used up to size.
		reserve := max(mapReserve, 2*size)
		m, err := unix.Mmap(int(w.f.Fd()), 0, reserve, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mapping %d bytes: %w", reserve, err)
		}
		if w.m != nil {
			unix.Munmap(w.m) //nolint:errcheck // a mapping of ours: cannot fail
		}
		w.m = m
		w.ready.Store(0) // a new mapping has no pages present: from the writer's offset on, prepare again
	}
	w.size = size
	return nil
}

// prepare makes the pages of the file from from up to until present and
// writable, growing it first if needed; the preparer calls it.
func (w *mapped) prepare(from, until int) {
	defer w.asked.Store(false)
	w.mu.RLock()
	if !w.closed && until > w.size {
		w.mu.RUnlock()
		w.mu.Lock()
		if !w.closed && until > w.size {
			w.grow(until) //nolint:errcheck // the writer meets the error and reports it
		}
		w.mu.Unlock()
		w.mu.RLock()
	}
	defer w.mu.RUnlock()
	if w.closed {
		return
	}
	const page = 4096
	from = max(from, int(w.ready.Load())) &^ (page - 1)
	until = min(until, w.size)
	for from < until {
		to := min(from+(64<<10), until)
		// The kernel faults the pages in writable without touching
		// their contents, so this may overlap a write in progress.
		if err := unix.Madvise(w.m[from:to], unix.MADV_POPULATE_WRITE); err != nil {
			w.prep.unsupported(err)
			return
		}
		from = to
		w.ready.Store(int64(from))
	}
}

// close unmaps the file, cuts it to what was written, syncs it if asked,
// and closes it. Only the writer calls it, once.
func (w *mapped) close(sync bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	var errs []error
	if w.m != nil {
		errs = append(errs, unix.Munmap(w.m))
		w.m = nil
	}
	if w.size != w.off {
		errs = append(errs, w.f.Truncate(int64(w.off)))
	}
	if sync {
		errs = append(errs, w.f.Sync())
	}
	errs = append(errs, w.f.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing recording: %w", err)
	}
	return nil
}

// preparer makes the pages ahead of every open recording's writer present,
// in one goroutine.
type preparer struct {
	queue chan prepRequest
	off   atomic.Bool // MADV_POPULATE_WRITE is not supported here (Linux < 5.14)
}

type prepRequest struct {
	w           *mapped
	from, until int
}

func newPreparer() *preparer {
	return &preparer{queue: make(chan prepRequest, 1024)}
}

// run prepares until stop is closed.
func (p *preparer) run(stop <-chan struct{}) {
	for {
		select {
		case r := <-p.queue:
			if p.off.Load() {
				r.w.asked.Store(false)
				continue
			}
			r.w.prepare(r.from, r.until)
		case <-stop:
			return
		}
	}
}

func (p *preparer) unsupported(err error) {
	if errors.Is(err, unix.EINVAL) {
		p.off.Store(true)
	}
}
