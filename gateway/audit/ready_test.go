package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

const readyPattern = "ready-*" + compactExt

// waitReady waits until n ready files are kept, on disk and in l.
func waitReady(t *testing.T, l *Log, n int) []string {
	t.Helper()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		l.ready.mu.Lock()
		kept := len(l.ready.free)
		l.ready.mu.Unlock()
		files, _ := filepath.Glob(filepath.Join(l.dir, readyPattern))
		if kept == n && len(files) == n {
			return files
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d ready files kept, %d on disk, want %d", kept, len(files), n)
		}
	}
}

// TestReadyFiles: a session's open recording is a file made ahead (the
// same inode), renamed to the session's name; the ready files are filled
// up again, are not recordings to List, and Close and RecoverUnsealed
// remove them.
func TestReadyFiles(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	inodes := map[uint64]bool{}
	for _, p := range waitReady(t, l, readyCount) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		inodes[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	const n = 3 * readyCount
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		evs := sessionEvents(id, 2)
		l.Record(evs[0])
		fi, err := os.Stat(OpenPath(dir, id))
		if err != nil {
			t.Fatalf("%s: open recording: %v", id, err)
		}
		if i == 0 && !inodes[fi.Sys().(*syscall.Stat_t).Ino] {
			t.Fatalf("%s: the open recording is a new file, not a ready one", id)
		}
		for _, e := range evs[1:] {
			l.Record(e)
		}
		waitCompressed(t, l, id)
	}
	waitReady(t, l, readyCount)
	files, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != n {
		t.Fatalf("List: %d recordings, want %d", len(files), n)
	}
	for _, f := range files {
		if f.Kind != Sealed {
			t.Fatalf("%s: kind %v", f.Path, f.Kind)
		}
		if _, err := Verify(f.Path, trusted(t)); err != nil {
			t.Fatal(err)
		}
	}
	if l.Dropped() != 0 || l.Failed() != 0 {
		t.Fatalf("dropped %d, failed %d", l.Dropped(), l.Failed())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, readyPattern)); len(left) != 0 {
		t.Fatalf("Close left ready files: %v", left)
	}

	// Ready files a stop left behind are no recordings, and are removed.
	for _, i := range []int{0, 5} {
		if err := os.WriteFile(filepath.Join(dir, readyName(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := RecoverUnsealed(t.Context(), dir, testKey, nil); n != 0 || err != nil {
		t.Fatalf("RecoverUnsealed: %d, %v", n, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, readyPattern)); len(left) != 0 {
		t.Fatalf("RecoverUnsealed left ready files: %v", left)
	}
}

// TestReadyFileNeverReplaces: a session whose open recording exists
// already (a stop left it, not yet recovered) is not recorded over it: the
// ready file is not renamed onto it, the file keeps its bytes, the
// session's events are dropped and counted, and the ready file is not lost
// to a later session.
func TestReadyFileNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	waitReady(t, l, readyCount)
	old := []byte("{\"v\":2,\"seq\":0}\n")
	if err := os.WriteFile(OpenPath(dir, "s-1"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, e := range sessionEvents("s-1", 2) {
		l.Record(e)
	}
	got, err := os.ReadFile(OpenPath(dir, "s-1"))
	if err != nil || string(got) != string(old) {
		t.Fatalf("the existing open recording now holds %q (%v), want %q", got, err, old)
	}
	if l.Dropped() == 0 {
		t.Fatal("the session's events were not counted as dropped")
	}
	for _, e := range sessionEvents("s-2", 2) {
		l.Record(e)
	}
	waitCompressed(t, l, "s-2")
	if _, err := Verify(Path(dir, "s-2"), trusted(t)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, readyCount)
}

// TestReadyFilesRunOut: more sessions at once than ready files: those
// past them create their own files, and every one is recorded.
func TestReadyFilesRunOut(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	waitReady(t, l, readyCount)
	const n = 4 * readyCount
	for i := range n {
		l.Record(sessionEvents(fmt.Sprintf("s-%d", i), 0)[0])
	}
	for i := range n {
		if _, err := os.Stat(OpenPath(dir, fmt.Sprintf("s-%d", i))); err != nil {
			t.Fatalf("s-%d: %v", i, err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		evs := sessionEvents(id, 1)
		for _, e := range evs[1:] {
			l.Record(e)
		}
		waitCompressed(t, l, id)
		if _, err := Verify(Path(dir, id), trusted(t)); err != nil {
			t.Fatal(err)
		}
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d events", l.Dropped())
	}
}
