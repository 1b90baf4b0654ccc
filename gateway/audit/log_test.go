package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// memIndex is an Index that keeps the last row of each session, and counts
// the rows and batches it was given.
type memIndex struct {
	mu               sync.Mutex
	rows             map[string]store.Session
	written, batches int
}

func (m *memIndex) IndexSessions(_ context.Context, ss []store.Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rows == nil {
		m.rows = map[string]store.Session{}
	}
	m.written += len(ss)
	m.batches++
	for _, s := range ss {
		m.rows[s.ID] = s
	}
	return nil
}

func (m *memIndex) get(id string) (store.Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	return r, ok
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	idx := &memIndex{}
	l, _ := openLog(t, dir, Options{Index: idx})
	evs := sessionEvents("s-1", 5)
	for _, e := range evs {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := Path(dir, "s-1")
	res, err := Verify(path, trusted(t))
	if err != nil || !res.Sealed || !res.Ended || res.Records != len(evs)+1 || res.KeyID != testKey.ID() {
		t.Fatalf("Verify: %+v, %v; want %d records, sealed by %s", res, err, len(evs)+1, testKey.ID())
	}
	recs, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		want, _ := json.Marshal(e.Data)
		if r := recs[i]; r.Type != e.Type || !r.Time.Equal(e.Time) || string(r.Data) != string(want) || r.Seq != int64(i) {
			t.Errorf("record %d: got %+v, want %s %s", i, r, e.Type, want)
		}
	}
	if recs[len(recs)-1].Type != SealType {
		t.Errorf("last record is %s, want the seal", recs[len(recs)-1].Type)
	}
	if _, err := os.Stat(OpenPath(dir, "s-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open file still there: %v", err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	row, ok := idx.get("s-1")
	if !ok || row.Status != StatusSealed || row.Outcome != protocols.OutcomeOK || row.Identity != "spiffe://postern.local/user/ann" ||
		row.Events != int64(len(evs)+1) || row.BytesIn != 9 || row.BytesOut != 6 || !row.Start.Equal(t0) {
		t.Errorf("index row %+v", row)
	}
}

// TestEventsInFileBeforeRecordReturns: what a protocol handler records
// before it answers its client is in the file (a kill -9 of the gateway
// cannot lose it) when Record returns; tcp.data waits for the flush.
func TestEventsInFileBeforeRecordReturns(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{FlushInterval: time.Hour})
	evs := sessionEvents("s-1", 1)
	l.Record(evs[0])
	l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{SQL: "select 1"}})
	l.Record(evs[1]) // tcp.data
	recs, err := readAll(t, OpenPath(dir, "s-1"))
	if err != nil || len(recs) != 2 || recs[1].Type != protocols.PostgresQuery {
		t.Fatalf("got %d records (%v), want start and query in the file", len(recs), err)
	}
	l.Record(evs[2])
	recs, err = readAll(t, OpenPath(dir, "s-1")) // sealed, compressed by now or soon
	if err != nil || len(recs) != 5 {
		t.Fatalf("after end: %d records, %v", len(recs), err)
	}
}

func TestTCPDataFlushedPeriodically(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{FlushInterval: 5 * time.Millisecond})
	evs := sessionEvents("s-1", 1)
	l.Record(evs[0])
	l.Record(evs[1])
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs, _ := readAll(t, OpenPath(dir, "s-1"))
		if len(recs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp.data not flushed: %d records", len(recs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConcurrentSessions: 200 sessions recording at once lose nothing.
func TestConcurrentSessions(t *testing.T) {
	dir := t.TempDir()
	idx := &memIndex{}
	l, _ := openLog(t, dir, Options{Index: idx})
	const sessions, events = 200, 50
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("s-%d", i)
			evs := sessionEvents(id, events)
			// Two goroutines of one session record at once, as a relay's
			// two directions do.
			var inner sync.WaitGroup
			l.Record(evs[0])
			for half := range 2 {
				inner.Add(1)
				go func() {
					defer inner.Done()
					for j := 1 + half; j <= events; j += 2 {
						l.Record(protocols.Event{Session: id, Type: protocols.PostgresQuery,
							Data: &protocols.PostgresQueryEvent{SQL: fmt.Sprintf("select %d", j)}})
						l.Record(evs[j])
					}
				}()
			}
			inner.Wait()
			l.Record(evs[len(evs)-1])
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range sessions {
		id := fmt.Sprintf("s-%d", i)
		res, err := Verify(Path(dir, id), trusted(t))
		if want := 1 + 2*events + 2; err != nil || res.Records != want {
			t.Fatalf("%s: %+v, %v; want %d records", id, res, err, want)
		}
		if row, ok := idx.get(id); !ok || row.Status != StatusSealed {
			t.Fatalf("%s: index row %+v", id, row)
		}
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d", l.Dropped())
	}
}

func TestInvalidSessionID(t *testing.T) {
	for name, id := range map[string]string{
		"empty": "", "slash": "../x", "dot": "a.b", "long": strings.Repeat("a", 129), "space": "a b",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, logs := openLog(t, dir, Options{})
			l.Record(protocols.Event{Session: id, Type: protocols.SessionStarted, Data: &protocols.SessionStart{}})
			if l.Dropped() != 1 || !strings.Contains(logs.String(), "invalid session id") {
				t.Fatalf("dropped %d, logs %q", l.Dropped(), logs)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("files written: %v", entries)
			}
		})
	}
}

func TestEventAfterEndDropped(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	for _, e := range sessionEvents("s-1", 1) {
		l.Record(e)
	}
	l.Record(protocols.Event{Session: "s-1", Type: protocols.TCPData, Data: &protocols.TCPDataEvent{Bytes: 1}})
	l.Close()
	if res, err := Verify(Path(dir, "s-1"), trusted(t)); err != nil || res.Records != 4 {
		t.Fatalf("got %+v, %v", res, err)
	}
}

func TestSessionRecordedTwiceRefused(t *testing.T) {
	dir := t.TempDir()
	_, before := validRecording(t, dir, "s-1", 1)
	l, logs := openLog(t, dir, Options{})
	for _, e := range sessionEvents("s-1", 1) {
		l.Record(e)
	}
	l.Close()
	after, _ := os.ReadFile(Path(dir, "s-1"))
	if string(after) != string(before) || l.Dropped() != 3 || !strings.Contains(logs.String(), "already ended") {
		t.Fatalf("dropped %d, logs %q, file changed: %v", l.Dropped(), logs, string(after) != string(before))
	}
}

// TestCreateFailureClosesSession: a session whose open recording cannot be
// made (here a file of its open name is there already; a full disk looks
// the same) is closed through OnFail, its events dropped, and the file
// left as it was.
func TestCreateFailureClosesSession(t *testing.T) {
	dir := t.TempDir()
	failed := make(chan error, 1)
	l, _ := openLog(t, dir, Options{OnFail: func(id string, err error) { failed <- err }})
	writeFile(t, OpenPath(dir, "s-1"), []byte("left by someone\n"))
	for _, e := range sessionEvents("s-1", 1) {
		l.Record(e)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrExist) {
			t.Fatalf("OnFail got %v, want the file's existence", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnFail not called")
	}
	for _, e := range sessionEvents("s-2", 1) {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(OpenPath(dir, "s-1")); string(got) != "left by someone\n" || l.Failed() != 1 {
		t.Fatalf("failed %d, file %q", l.Failed(), got)
	}
	if _, err := Verify(Path(dir, "s-2"), trusted(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCloseLeavesOpenSessionsUnsealed(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{FlushInterval: time.Hour})
	evs := sessionEvents("s-1", 3)
	for _, e := range evs[:len(evs)-1] {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := OpenPath(dir, "s-1")
	recs, err := readAll(t, path)
	if err != nil || len(recs) != 4 {
		t.Fatalf("got %d records, %v; want 4 (tcp.data written at close)", len(recs), err)
	}
	_, err = Verify(path, trusted(t))
	if !errors.Is(err, ErrUnsealed) {
		t.Fatalf("got %v, want ErrUnsealed", err)
	}
	l.Record(evs[len(evs)-1])
	if l.Dropped() != 1 {
		t.Fatalf("event after Close: dropped %d, want 1", l.Dropped())
	}
}

// TestFullBufferClosesSession: a session whose records cannot reach the
// disk fast enough is closed (OnFail), or with FailOpen its events are
// dropped; either way the recording that is there verifies.
func TestFullBufferClosesSession(t *testing.T) {
	for name, failOpen := range map[string]bool{"fail closed": false, "fail open": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var failed atomic.Value
			l, _ := openLog(t, dir, Options{FlushInterval: time.Hour, MaxBuffer: 1000, FailOpen: failOpen,
				OnFail: func(id string, err error) { failed.Store(id) }})
			evs := sessionEvents("s-1", 40) // tcp.data waits for the flush: the buffer fills up
			for _, e := range evs {
				l.Record(e)
			}
			l.Close()
			if got, _ := failed.Load().(string); (got == "s-1") == failOpen {
				t.Fatalf("OnFail called for %q, fail open %v", got, failOpen)
			}
			if l.Dropped() == 0 {
				t.Fatal("nothing dropped")
			}
			res, err := Verify(Path(dir, "s-1"), trusted(t))
			if err != nil || !res.Sealed || res.Records >= len(evs)+1 {
				t.Fatalf("got %+v, %v; want a sealed recording without the dropped events", res, err)
			}
			if (l.Failed() == 1) == failOpen {
				t.Fatalf("failed sessions %d", l.Failed())
			}
		})
	}
}

func TestUnencodableData(t *testing.T) {
	dir := t.TempDir()
	l, logs := openLog(t, dir, Options{})
	l.Record(protocols.Event{Session: "s-1", Type: protocols.SessionStarted, Data: func() {}})
	if l.Dropped() != 1 || !strings.Contains(logs.String(), "encoding event data") {
		t.Fatalf("dropped %d, logs %q", l.Dropped(), logs)
	}
}

func TestOpenNeedsKey(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Fatal("opened without a key")
	}
}

// BenchmarkRecord is the recorder's cost per Postgres query on the data
// path: encode, hash, compress one frame, write.
func BenchmarkRecord(b *testing.B) {
	l, err := Open(b.TempDir(), Options{Key: testKey})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	l.Record(protocols.Event{Session: "s", Type: protocols.SessionStarted, Data: &protocols.SessionStart{}})
	ev := protocols.Event{Session: "s", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{
		SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{ptr("123")}, Protocol: "extended",
		Class: "read", Verdict: "allow", Rule: "bench", Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.1}}
	b.ReportAllocs()
	for b.Loop() {
		l.Record(ev)
	}
}

// BenchmarkWholeSessions is what recording costs the gateway over whole
// sessions, 4 at a time, from the first record to the sealed file
// compressed, with the background work (pages made present, compression)
// included: sessions like pgbench's (2,000 Postgres queries) and short ones
// like a connection's that sends a request or two (2 queries). cpu-ns/record
// and cpu-µs/session are the process's CPU time, user and system, per record
// and per session.
func BenchmarkWholeSessions(b *testing.B) {
	for _, queries := range []int{2000, 2} {
		b.Run(fmt.Sprintf("queries=%d", queries), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{Key: testKey})
			if err != nil {
				b.Fatal(err)
			}
			query := &protocols.PostgresQueryEvent{
				SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{ptr("123")},
				Protocol: "extended", Class: "read", Verdict: "allow", Rule: "bench",
				Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.1}
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
			cpu := float64((processCPU() - before).Nanoseconds())
			b.ReportMetric(cpu/float64(b.N*(queries+3)), "cpu-ns/record")
			b.ReportMetric(cpu/1e3/float64(b.N), "cpu-µs/session")
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

// TestManyEndsShareEncoders: when many sessions end at once, their
// recordings are compressed a few at a time with the encoders kept, instead
// of each making its own.
func TestManyEndsShareEncoders(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	const n = 64
	for i := range n {
		evs := sessionEvents(fmt.Sprintf("s-%d", i), 2)
		for _, e := range evs[:len(evs)-1] {
			l.Record(e)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			evs := sessionEvents(fmt.Sprintf("s-%d", i), 2)
			l.Record(evs[len(evs)-1])
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	for i := range n {
		if _, err := Verify(Path(dir, fmt.Sprintf("s-%d", i)), trusted(t)); err != nil {
			t.Fatal(err)
		}
	}
	// Measured: 0.3 to 3.5 MB with the bound, 12 to 24 MB without (an
	// encoder made for a recording this small takes ~200 KB of tables and
	// history; one for a long recording over 1 MiB).
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("%d sessions ending at once allocated %d bytes", n, got)
	} else {
		t.Logf("%d sessions ending at once allocated %d bytes", n, got)
	}
}

// TestIndexRowsShareBatches: rows that come close together are written in
// one batch, each session's last row only: a short session's start and end
// become one row.
func TestIndexRowsShareBatches(t *testing.T) {
	idx := &memIndex{}
	l, _ := openLog(t, t.TempDir(), Options{Index: idx})
	const n = 20
	for i := range n {
		for _, e := range sessionEvents(fmt.Sprintf("s-%d", i), 1) {
			l.Record(e)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	idx.mu.Lock()
	defer idx.mu.Unlock()
	if len(idx.rows) != n || idx.written >= 2*n || idx.batches >= n {
		t.Fatalf("%d sessions indexed in %d rows and %d batches; want %d sessions in fewer rows than their %d starts and ends, and fewer batches than sessions",
			len(idx.rows), idx.written, idx.batches, n, 2*n)
	}
	for id, r := range idx.rows {
		if r.Status != StatusSealed || r.Outcome != protocols.OutcomeOK {
			t.Fatalf("%s: last row %+v, want its end", id, r)
		}
	}
}

// TestIndexRowsAtClose: rows still queued when the log closes are written
// once a session too.
func TestIndexRowsAtClose(t *testing.T) {
	idx := &memIndex{}
	l := &Log{opts: Options{Index: idx}, logger: slog.New(slog.DiscardHandler),
		index: make(chan store.Session, 8), stop: make(chan struct{})}
	for _, r := range []store.Session{{ID: "a", Events: 1}, {ID: "b", Events: 1}, {ID: "a", Events: 2}} {
		l.index <- r
	}
	close(l.stop) // the rows are what Close finds queued
	l.done.Add(1)
	l.indexLoop()
	if idx.batches != 1 || idx.written != 2 || idx.rows["a"].Events != 2 {
		t.Fatalf("%d rows in %d batches, a at %d events; want 2 rows in 1 batch, a at its last row's 2",
			idx.written, idx.batches, idx.rows["a"].Events)
	}
}

func TestLastRows(t *testing.T) {
	row := func(id string, events int64) store.Session { return store.Session{ID: id, Events: events} }
	tests := map[string]struct{ in, want []store.Session }{
		"none":        {},
		"distinct":    {in: []store.Session{row("a", 1), row("b", 1)}, want: []store.Session{row("a", 1), row("b", 1)}},
		"last wins":   {in: []store.Session{row("a", 1), row("a", 2), row("a", 3)}, want: []store.Session{row("a", 3)}},
		"first place": {in: []store.Session{row("a", 1), row("b", 1), row("a", 2)}, want: []store.Session{row("a", 2), row("b", 1)}},
		"interleaved": {in: []store.Session{row("a", 1), row("b", 1), row("b", 2), row("c", 1), row("a", 2)},
			want: []store.Session{row("a", 2), row("b", 2), row("c", 1)}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := lastRows(slices.Clone(tt.in))
			if !slices.EqualFunc(got, tt.want, func(a, b store.Session) bool { return a.ID == b.ID && a.Events == b.Events }) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLiveIndexRow: the index row of an open session follows its records,
// and never overtakes its end.
func TestLiveIndexRow(t *testing.T) {
	defer func(d time.Duration) { liveIndexInterval = d }(liveIndexInterval)
	liveIndexInterval = 10 * time.Millisecond
	idx := &memIndex{}
	l, _ := openLog(t, t.TempDir(), Options{Index: idx})
	evs := sessionEvents("s-1", 0)
	l.Record(evs[0])
	for range 3 {
		l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{SQL: "select 1"}})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if row, _ := idx.get("s-1"); row.Events == 4 && row.Status == StatusOpen {
			break
		}
		if time.Now().After(deadline) {
			row, _ := idx.get("s-1")
			t.Fatalf("index row %+v, want 4 records, open", row)
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Record(evs[1])
	time.Sleep(50 * time.Millisecond) // ticks after the end
	l.Close()
	if row, _ := idx.get("s-1"); row.Events != 6 || row.Status != StatusSealed {
		t.Fatalf("index row %+v, want 6 records, sealed", row)
	}
}

// TestRequestIdentitiesIndexed: a session without a connection identity
// (bearer tokens on HTTP or gRPC) is indexed under the identities that made
// its requests, the same way live, when read back without an index, and
// when recovered after a crash.
func TestRequestIdentitiesIndexed(t *testing.T) {
	const (
		ann = "spiffe://postern.local/workload/ann"
		bob = "spiffe://postern.local/workload/bob"
	)
	events := func(id string) []protocols.Event {
		at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
		return []protocols.Event{
			{Session: id, Time: at(0), Type: protocols.SessionStarted,
				Data: &protocols.SessionStart{Source: "127.0.0.1:40000", Service: "web", Protocol: protocols.HTTP}},
			{Session: id, Time: at(1), Type: protocols.HTTPRequested,
				Data: &protocols.HTTPRequestEvent{Method: "GET", Path: "/", Status: 401}},
			{Session: id, Time: at(2), Type: protocols.HTTPRequested,
				Data: &protocols.HTTPRequestEvent{Method: "GET", Path: "/", Identity: ann, Auth: protocols.AuthAPIKey, Status: 200}},
			{Session: id, Time: at(3), Type: protocols.GRPCCalled,
				Data: &protocols.GRPCCallEvent{Method: "/p.S/M", Identity: bob, Auth: protocols.AuthOIDC, Status: 7}},
			{Session: id, Time: at(4), Type: protocols.HTTPRequested,
				Data: &protocols.HTTPRequestEvent{Method: "GET", Path: "/", Identity: ann, Auth: protocols.AuthAPIKey, Status: 200}},
			{Session: id, Time: at(5), Type: protocols.SessionEnded,
				Data: &protocols.SessionEnd{Outcome: protocols.OutcomeOK}},
		}
	}
	check := func(t *testing.T, how string, row store.Session) {
		t.Helper()
		if row.Identity != ann || !slices.Equal(row.Identities, []string{bob}) {
			t.Fatalf("%s: row identity %q, others %q; want %q, [%q]", how, row.Identity, row.Identities, ann, bob)
		}
	}

	dir := t.TempDir()
	idx := &memIndex{}
	l, _ := openLog(t, dir, Options{Index: idx})
	for _, e := range events("live") {
		l.Record(e)
	}
	evs := events("cut")
	for _, e := range evs[:len(evs)-1] {
		l.Record(e)
	}
	l.Close()
	row, _ := idx.get("live")
	check(t, "live index", row)

	a := &Archive{Dir: dir}
	row, _, err := a.Session(context.Background(), "live")
	if err != nil {
		t.Fatal(err)
	}
	check(t, "read without an index", row)
	for _, who := range []string{ann, bob, "*/bob"} {
		ss, err := a.Sessions(context.Background(), store.SessionFilter{Identity: who, Status: StatusSealed})
		if err != nil || len(ss) != 1 || ss[0].ID != "live" {
			t.Fatalf("sessions of %s without an index: %v, %v; want [live]", who, ss, err)
		}
	}

	idx = &memIndex{}
	if n, err := RecoverUnsealed(context.Background(), dir, testKey, idx); err != nil || n != 1 {
		t.Fatalf("RecoverUnsealed: %d, %v; want 1 recovered", n, err)
	}
	row, _ = idx.get("cut")
	check(t, "recovered", row)
}
