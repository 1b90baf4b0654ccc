package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// TestSealCompresses: while a session is open its recording is plain JSON
// lines: its first writeLimit bytes just written, then in a file reserved
// ahead (zero bytes past the last record); once sealed it is compressed
// into its sealed file, the same lines, smaller, and the open file is gone;
// Close waits for it.
func TestSealCompresses(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{FlushInterval: time.Hour})
	evs := sessionEvents("s-1", 0)
	l.Record(evs[0])
	query := func(i int) {
		l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery,
			Data: &protocols.PostgresQueryEvent{SQL: fmt.Sprintf("SELECT %d FROM accounts", i), Rows: 1}})
	}
	for i := range 100 {
		query(i)
	}
	open, err := os.ReadFile(OpenPath(dir, "s-1"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := decoded(t, open); len(lines) != 101 || !bytes.Equal(open, plain(lines)) || len(open) > writeLimit {
		t.Fatalf("short open recording: %d lines in %d bytes; want 101 lines and nothing else", len(lines), len(open))
	}
	for i := 100; i < 400; i++ {
		query(i)
	}
	open, err = os.ReadFile(OpenPath(dir, "s-1"))
	if err != nil {
		t.Fatal(err)
	}
	lines := decoded(t, open)
	if len(lines) != 401 || len(open)%mapInitial != 0 || len(open) <= len(plain(lines)) || open[len(open)-1] != 0 {
		t.Fatalf("open recording: %d lines in %d bytes; want 401 lines, the file extended in steps of %d", len(lines), len(open), mapInitial)
	}
	if recs, err := readAll(t, OpenPath(dir, "s-1")); err != nil || len(recs) != 401 {
		t.Fatalf("reading the open recording: %d records, %v", len(recs), err)
	}
	l.Record(evs[1])
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(Path(dir, "s-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(Path(dir, "s-1"), trusted(t)); err != nil {
		t.Fatalf("sealed recording: %v", err)
	}
	got := decoded(t, sealed)
	if !bytes.Equal(plain(got[:401]), plain(lines)) || len(got) != 403 {
		t.Fatalf("sealed recording has %d lines, not the open one's 401 and the end and seal", len(got))
	}
	if !bytes.HasPrefix(sealed, zstdMagic) || len(sealed)*4 > len(plain(got)) {
		t.Fatalf("sealed %d bytes for %d of records", len(sealed), len(plain(got)))
	}
	for _, p := range []string{OpenPath(dir, "s-1"), Path(dir, "s-1") + compactExt} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left behind: %v", filepath.Base(p), err)
		}
	}
	t.Logf("%d records: %d bytes of lines, %d compressed", len(got), len(plain(got)), len(sealed))
}

// TestMappedGrows: a session larger than the first size of its file grows
// it, under its mapping's reservation or past it (a new mapping), and its
// records all read back.
func TestMappedGrows(t *testing.T) {
	for _, reserve := range []int{mapReserve, 128 << 10} {
		t.Run(fmt.Sprintf("reserve=%d", reserve), func(t *testing.T) {
			defer func(r int) { mapReserve = r }(mapReserve)
			mapReserve = reserve
			dir := t.TempDir()
			l, _ := openLog(t, dir, Options{})
			evs := sessionEvents("s-1", 0)
			l.Record(evs[0])
			sql := string(bytes.Repeat([]byte("x"), 3000))
			for i := range 400 { // 1.2 MB: several growths, two frames when sealed
				l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery,
					Data: &protocols.PostgresQueryEvent{SQL: sql, Rows: int64(i)}})
			}
			recs, err := readAll(t, OpenPath(dir, "s-1"))
			if err != nil || len(recs) != 401 {
				t.Fatalf("open recording: %d records, %v", len(recs), err)
			}
			for i, r := range recs[1:] {
				var q protocols.PostgresQueryEvent
				if err := json.Unmarshal(r.Data, &q); err != nil || q.Rows != int64(i) || q.SQL != sql {
					t.Fatalf("record %d: rows %d, %d bytes of SQL, %v", i+1, q.Rows, len(q.SQL), err)
				}
			}
			l.Record(evs[1])
			l.Close()
			if res, err := Verify(Path(dir, "s-1"), trusted(t)); err != nil || res.Records != 403 {
				t.Fatalf("got %+v, %v", res, err)
			}
		})
	}
}

// TestArchiveRefusesBroken: an open recording that does not read cleanly
// is left as it is.
func TestArchiveRefusesBroken(t *testing.T) {
	dir := t.TempDir()
	_, b := validRecording(t, dir, "s-1", 3)
	os.Remove(Path(dir, "s-1"))
	ls := decoded(t, b)
	ls = append(ls[:2:2], ls[3:]...)
	writeFile(t, OpenPath(dir, "s-1"), plain(ls))
	if _, err := archiveOpen(dir, "s-1", testKey); err == nil {
		t.Fatal("archived a broken recording")
	}
	if after, _ := os.ReadFile(OpenPath(dir, "s-1")); !bytes.Equal(after, plain(ls)) {
		t.Fatal("the broken recording was changed")
	}
	if _, err := os.Stat(Path(dir, "s-1")); !os.IsNotExist(err) {
		t.Fatalf("sealed file written: %v", err)
	}
}

// TestMappedFault: a fault of the mapping (here the file cut short behind
// the gateway's back; a full disk looks the same) stops the session's
// recording and closes the session, and does not crash the gateway; so does
// a failed write(2) before the file is mapped (here its descriptor closed
// behind the Log's back; a full disk looks the same).
func TestMappedFault(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		t.Run(fmt.Sprintf("mapped=%v", mapped), func(t *testing.T) {
			testWriteFault(t, mapped)
		})
	}
}

func testWriteFault(t *testing.T, mapped bool) {
	dir := t.TempDir()
	var failed atomic.Value
	l, logs := openLog(t, dir, Options{OnFail: func(id string, err error) { failed.Store(err) }})
	evs := sessionEvents("s-1", 0)
	l.Record(evs[0])
	want := "file already closed"
	if mapped {
		want = "fault"
		big := strings.Repeat("x", writeLimit)
		l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{SQL: big}})
		if err := os.Truncate(OpenPath(dir, "s-1"), 0); err != nil {
			t.Fatal(err)
		}
	} else {
		openRecording(t, l, "s-1").f.Close()
	}
	l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{SQL: "select 1"}})
	err, _ := failed.Load().(error)
	if err == nil || !strings.Contains(err.Error(), want) || l.Failed() != 1 {
		t.Fatalf("OnFail got %v, failed %d; logs %s", err, l.Failed(), logs)
	}
	// Other sessions go on.
	for _, e := range sessionEvents("s-2", 2) {
		l.Record(e)
	}
	l.Close()
	if _, err := Verify(Path(dir, "s-2"), trusted(t)); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCompressSealed is the work after a session's seal: its open
// recording (Postgres query records) compressed into the sealed file,
// synced. Reported per record, for a long session and a short one, and for
// a short one after garbage collections (as in a gateway, where many run
// between two sessions' ends).
func BenchmarkCompressSealed(b *testing.B) {
	for _, c := range []struct {
		n  int
		gc bool
	}{{20000, false}, {3, false}, {3, true}} {
		n := c.n
		name := fmt.Sprintf("queries=%d", n)
		if c.gc {
			name += "/after-gc"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			l, err := Open(dir, Options{Key: testKey})
			if err != nil {
				b.Fatal(err)
			}
			l.Record(protocols.Event{Session: "s", Type: protocols.SessionStarted, Data: &protocols.SessionStart{}})
			for i := range n {
				l.Record(protocols.Event{Session: "s", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{
					SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{ptr(fmt.Sprint(i))},
					Protocol: "extended", Class: "read", Verdict: "allow", Rule: "bench", Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.1}})
			}
			l.Close() // unsealed: the open file stays
			open := OpenPath(dir, "s")
			plain, err := os.ReadFile(open)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(plain) / (n + 1)))
			b.ResetTimer()
			for range max(b.N/(n+1), 1) {
				if err := compressSealed(dir, "s", nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if fi, err := os.Stat(Path(dir, "s")); err == nil {
					b.ReportMetric(float64(len(plain))/float64(fi.Size()), "ratio")
				}
				writeFile(b, open, plain)
				os.Remove(Path(dir, "s"))
				if c.gc {
					runtime.GC()
					runtime.GC()
				}
				b.StartTimer()
			}
		})
	}
}

// TestSealedFilesReuseOpenOnes: once a recording is compressed, its open
// file is kept as a spare, and the next compression writes into it
// (truncated) rather than into a new file, so that a session removes no
// file; the spares are not recordings to List, never more than
// maxSpares, and Close removes them (RecoverUnsealed those a stop left).
func TestSealedFilesReuseOpenOnes(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{FlushInterval: time.Hour})
	inode := func(p string) uint64 {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	// The first session is long, the second short: the spare the second
	// is compressed into held more than its sealed file.
	evs := sessionEvents("s-0", 0)
	l.Record(evs[0])
	for i := range 2000 {
		l.Record(protocols.Event{Session: "s-0", Type: protocols.PostgresQuery,
			Data: &protocols.PostgresQueryEvent{SQL: fmt.Sprintf("SELECT %d FROM accounts", i), Rows: 1}})
	}
	firstOpen := inode(OpenPath(dir, "s-0"))
	l.Record(evs[1])
	waitCompressed(t, l, "s-0")
	const n = 20 // more than maxSpares
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("s-%d", i)
		for _, e := range sessionEvents(id, 2) {
			l.Record(e)
		}
		waitCompressed(t, l, id)
		if i == 1 {
			if got := inode(Path(dir, id)); got != firstOpen {
				t.Fatalf("s-1's sealed file is inode %d, not s-0's open file (%d)", got, firstOpen)
			}
		}
		spares, _ := filepath.Glob(filepath.Join(dir, sparePattern))
		if len(spares) == 0 || len(spares) > maxSpares {
			t.Fatalf("after %s: %d spare files, want 1 to %d", id, len(spares), maxSpares)
		}
	}
	files, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != n+1 {
		t.Fatalf("List: %d recordings, want %d", len(files), n+1)
	}
	for _, f := range files {
		if f.Kind != Sealed {
			t.Fatalf("%s: kind %v", f.Path, f.Kind)
		}
		if _, err := Verify(f.Path, trusted(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if spares, _ := filepath.Glob(filepath.Join(dir, sparePattern)); len(spares) != 0 {
		t.Fatalf("Close left spares: %v", spares)
	}

	// A spare a stop left behind is no recording, and is removed.
	left := filepath.Join(dir, spareName(7))
	if err := os.WriteFile(left, []byte("{\"v\":2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := RecoverUnsealed(t.Context(), dir, testKey, nil); n != 0 || err != nil {
		t.Fatalf("RecoverUnsealed: %d, %v", n, err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("a spare left by a stop was not removed: %v", err)
	}
}

// TestRecoverPutsBackSpare: a crash of the machine between a compression's
// renames and its directory sync can keep the open recording's new name (a
// spare's) and lose the sealed file's; RecoverUnsealed takes the spare for
// the recording it holds, and seals it again.
func TestRecoverPutsBackSpare(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	for _, e := range sessionEvents("s-1", 2) {
		l.Record(e)
	}
	waitCompressed(t, l, "s-1")
	spares, _ := filepath.Glob(filepath.Join(dir, sparePattern))
	if len(spares) != 1 {
		t.Fatalf("spares: %v", spares)
	}
	open, err := os.ReadFile(spares[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// What the disk may hold after the crash: the spare, no sealed file.
	if err := os.Remove(Path(dir, "s-1")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, spareName(3)), open)
	if n, err := RecoverUnsealed(t.Context(), dir, testKey, nil); n != 1 || err != nil {
		t.Fatalf("RecoverUnsealed: %d, %v", n, err)
	}
	res, err := Verify(Path(dir, "s-1"), trusted(t))
	if err != nil || res.Records != 5 {
		t.Fatalf("recovered recording: %+v, %v", res, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*"+compactExt)); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// waitCompressed waits until the recording of id is compressed and its open
// file a spare ready for the next compression.
func waitCompressed(t *testing.T, l *Log, id string) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		l.spares.mu.Lock()
		aside := l.spares.aside
		l.spares.mu.Unlock()
		_, errOpen := os.Stat(OpenPath(l.dir, id))
		if _, err := os.Stat(Path(l.dir, id)); err == nil && os.IsNotExist(errOpen) && aside == 0 {
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s not compressed after 10 s", id)
		}
	}
}
