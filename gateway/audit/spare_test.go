package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// spareFiles returns the spares in dir.
func spareFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, spareGlob))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitSealed waits until id's sealed file is in place and its open file gone.
func waitSealed(t *testing.T, dir, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, serr := os.Stat(Path(dir, id))
		_, oerr := os.Stat(OpenPath(dir, id))
		if serr == nil && os.IsNotExist(oerr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not sealed and compressed: %v, %v", id, serr, oerr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recordQueries records a session of n queries of size bytes of SQL, without
// its end.
func recordQueries(l *Log, id string, n, size int) {
	l.Record(sessionEvents(id, 0)[0])
	sql := strings.Repeat("x", size)
	for i := range n {
		l.Record(protocols.Event{Session: id, Type: protocols.PostgresQuery,
			Data: &protocols.PostgresQueryEvent{SQL: fmt.Sprintf("%s %d", sql, i), Rows: int64(i)}})
	}
}

// TestSparesReused: the open recording of a sealed and compressed session
// becomes a spare, zeroed; the next session's open recording is that file,
// and holds its own records only; both verify.
func TestSparesReused(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	recordQueries(l, "s-1", 300, 200)
	first, err := os.Stat(OpenPath(dir, "s-1"))
	if err != nil {
		t.Fatal(err)
	}
	l.Record(sessionEvents("s-1", 0)[1])
	waitSealed(t, dir, "s-1")
	spares := spareFiles(t, dir)
	if len(spares) != 1 {
		t.Fatalf("spares after one session: %v", spares)
	}
	b, err := os.ReadFile(spares[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatalf("spare of %d bytes is not all zero bytes", len(b))
	}

	recordQueries(l, "s-2", 3, 10)
	second, err := os.Stat(OpenPath(dir, "s-2"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(first, second) {
		t.Fatal("the second session's open recording is a new file, not the spare")
	}
	if got := spareFiles(t, dir); len(got) != 0 {
		t.Fatalf("spares while the second session runs: %v", got)
	}
	recs, err := readAll(t, OpenPath(dir, "s-2"))
	if err != nil || len(recs) != 4 {
		t.Fatalf("open recording of s-2: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Session != "s-2" {
			t.Fatalf("record %d of s-2's open recording is of %s", r.Seq, r.Session)
		}
	}
	l.Record(sessionEvents("s-2", 0)[1])
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int{"s-1": 303, "s-2": 6} {
		if res, err := Verify(Path(dir, id), trusted(t)); err != nil || res.Records != want {
			t.Fatalf("%s: %+v, %v; want %d records", id, res, err, want)
		}
	}
	if got := spareFiles(t, dir); len(got) != 0 {
		t.Fatalf("spares left after Close: %v", got)
	}
}

// TestSpareBounds: a session's file longer than maxSpareSize is removed,
// not kept; spares a stop left behind are removed when a Log opens.
func TestSpareBounds(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, ".spare-7"), []byte(`{"v":2,"seq":0}`+"\n"))
	l, _ := openLog(t, dir, Options{})
	if got := spareFiles(t, dir); len(got) != 0 {
		t.Fatalf("leftover spares not removed: %v", got)
	}
	recordQueries(l, "s-1", maxSpareSize/3000+10, 3000)
	l.Record(sessionEvents("s-1", 0)[1])
	waitSealed(t, dir, "s-1")
	if got := spareFiles(t, dir); len(got) != 0 {
		t.Fatalf("a %d-byte file kept as a spare: %v", maxSpareSize, got)
	}
	if _, err := Verify(Path(dir, "s-1"), trusted(t)); err != nil {
		t.Fatal(err)
	}
}

// TestSpareNotOverExisting: a session whose open recording exists already
// is not recorded over it when a spare is there either; the spare stays.
func TestSpareNotOverExisting(t *testing.T) {
	dir := t.TempDir()
	l, logs := openLog(t, dir, Options{})
	recordQueries(l, "s-1", 3, 10)
	l.Record(sessionEvents("s-1", 0)[1])
	waitSealed(t, dir, "s-1")
	if len(spareFiles(t, dir)) != 1 {
		t.Fatal("no spare")
	}
	old := []byte("left by someone else\n")
	writeFile(t, OpenPath(dir, "s-2"), old)
	recordQueries(l, "s-2", 3, 10)
	if b, err := os.ReadFile(OpenPath(dir, "s-2")); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("existing open recording changed: %q, %v", b, err)
	}
	if len(spareFiles(t, dir)) != 1 {
		t.Fatal("the spare was lost")
	}
	if l.Dropped() == 0 || !strings.Contains(logs.String(), "exists") {
		t.Fatalf("dropped %d; log:\n%s", l.Dropped(), logs)
	}
}

// BenchmarkSessions is what recording costs the gateway over whole
// sessions like pgbench's: 4 at a time, each of 2,000 Postgres queries,
// from the first record to the sealed file compressed, with the background
// work (pages made present, compression, spares) included. cpu-ns/record
// is the process's CPU time, user and system, per record; with spares and
// without (every session's open recording a new file).
func BenchmarkSessions(b *testing.B) {
	for _, keep := range []int{maxSpares, 0} {
		name := "spares"
		if keep == 0 {
			name = "no-spares"
		}
		b.Run(name, func(b *testing.B) {
			defer func(n int) { maxSpares = n }(maxSpares)
			maxSpares = keep
			l, err := Open(b.TempDir(), Options{Key: testKey})
			if err != nil {
				b.Fatal(err)
			}
			query := &protocols.PostgresQueryEvent{
				SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{ptr("123")},
				Protocol: "extended", Class: "read", Verdict: "allow", Rule: "bench",
				Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.1}
			const queries = 2000
			var next atomic.Int64
			before := processCPU()
			b.SetParallelism(2) // 4 sessions at a time on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("s-%d", next.Add(1))
					evs := sessionEvents(id, 0)
					l.Record(evs[0])
					for range queries {
						l.Record(protocols.Event{Session: id, Type: protocols.PostgresQuery, Data: query})
					}
					l.Record(evs[1])
				}
			})
			if err := l.Close(); err != nil { // waits for the compression
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-before).Nanoseconds())/float64(b.N*(queries+3)), "cpu-ns/record")
		})
	}
}

// processCPU returns the CPU time, user and system, of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
