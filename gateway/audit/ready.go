package audit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// readyFiles keeps a few empty files, made in the background, for the open
// recordings of sessions to come: a session's first event renames one to
// its open name (17–19 µs here) instead of creating the file on the data
// path (90 µs to over 400 µs on ext4 without a journal, which scans the
// inodes freed in the last minutes before it reuses one; docs/BENCHMARKS.md).
// The file is still made, but while no connection waits for it. A ready
// file's name is not a recording's (ready-N.compact.tmp): readers skip it,
// and RecoverUnsealed removes those a stop leaves. A nil *readyFiles keeps
// none.
type readyFiles struct {
	dir    string
	mu     sync.Mutex
	free   []readyFile
	next   int
	closed bool
	wake   chan struct{} // asks the filler to make files up to readyCount
}

type readyFile struct {
	f    *os.File
	path string
}

// readyCount is how many ready files are kept: as many sessions may start
// at once without one creating its own file.
const readyCount = 8

func newReadyFiles(dir string) *readyFiles {
	return &readyFiles{dir: dir, wake: make(chan struct{}, 1)}
}

func readyName(n int) string { return "ready-" + strconv.Itoa(n) + compactExt }

// take gives a ready file the name path, which must not exist, and returns
// it open for reading and writing; nil when none is ready or the rename
// fails (the caller then creates the file itself and meets the error there).
func (r *readyFiles) take(path string) *os.File {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	n := len(r.free)
	if n == 0 || r.closed {
		r.mu.Unlock()
		r.poke()
		return nil
	}
	rf := r.free[n-1]
	r.free = r.free[:n-1]
	r.mu.Unlock()
	r.poke()
	// RENAME_NOREPLACE, as O_EXCL for a created file: a recording of the
	// same name is never written over.
	if err := unix.Renameat2(unix.AT_FDCWD, rf.path, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		rf.f.Close()
		os.Remove(rf.path)
		return nil
	}
	return rf.f
}

// poke wakes the filler without waiting.
func (r *readyFiles) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run keeps readyCount files ready until stop is closed.
func (r *readyFiles) run(stop <-chan struct{}) {
	for {
		r.fill()
		select {
		case <-r.wake:
		case <-stop:
			return
		}
	}
}

// fill makes files until readyCount are ready. It gives up at the first
// error but a name taken (a leftover not yet removed): the data path then
// creates its own files, and reports what fails.
func (r *readyFiles) fill() {
	for {
		r.mu.Lock()
		if r.closed || len(r.free) >= readyCount {
			r.mu.Unlock()
			return
		}
		path := filepath.Join(r.dir, readyName(r.next))
		r.next++
		r.mu.Unlock()
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			f.Close()
			os.Remove(path)
			return
		}
		r.free = append(r.free, readyFile{f: f, path: path})
		r.mu.Unlock()
	}
}

// removeAll removes the ready files and makes no more.
func (r *readyFiles) removeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, rf := range r.free {
		rf.f.Close()
		os.Remove(rf.path)
	}
	r.free = nil
}
