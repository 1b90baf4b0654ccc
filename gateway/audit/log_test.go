package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	l, _ := openLog(t, dir)
	evs := sessionEvents("s-1", 10)
	// A denial in the middle, as a policy check would record it.
	evs = append(evs[:3], append([]protocols.Event{{Session: "s-1", Time: t0, Type: protocols.AuthzDenied,
		Data: protocols.AuthzDeny{Rule: protocols.DefaultDeny, Reason: "no rule"}}}, evs[3:]...)...)
	for _, e := range evs {
		l.Record(e)
	}

	recs, err := readAll(t, Path(dir, "s-1"))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(recs) != len(evs) {
		t.Fatalf("got %d records, want %d", len(recs), len(evs))
	}
	for i, r := range recs {
		e := evs[i]
		want, _ := json.Marshal(e.Data)
		if r.V != Version || r.Seq != int64(i) || r.Session != "s-1" || r.Type != e.Type ||
			!r.Time.Equal(e.Time) || string(r.Data) != string(want) {
			t.Errorf("record %d: got %+v, want event %+v", i, r, e)
		}
	}
	if recs[0].Prev != "" {
		t.Errorf("got first prev %q, want empty", recs[0].Prev)
	}

	s, err := Summarize(Path(dir, "s-1"))
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	if !s.Ended || s.Records != len(evs) || s.Start == nil || s.Start.Service != "db" ||
		s.End == nil || s.End.Outcome != protocols.OutcomeOK {
		t.Fatalf("got summary %+v", s)
	}
	if l.Dropped() != 0 {
		t.Fatalf("got %d dropped, want 0", l.Dropped())
	}

	for path, want := range map[string]os.FileMode{dir: 0o700, Path(dir, "s-1"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: got mode %v, want %v", path, got, want)
		}
	}
}

func TestConcurrentSessions(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	const sessions, events = 200, 30
	var wg sync.WaitGroup
	for i := range sessions {
		id := fmt.Sprintf("sess_%03d", i)
		wg.Go(func() {
			evs := sessionEvents(id, events)
			if i%10 == 0 {
				evs = evs[:len(evs)-1] // still open when the Log closes
			}
			for _, e := range evs {
				l.Record(e)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l.Dropped() != 0 {
		t.Fatalf("got %d dropped, want 0", l.Dropped())
	}
	ids, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != sessions {
		t.Fatalf("got %d recordings, want %d", len(ids), sessions)
	}
	for i, id := range ids {
		s, err := Summarize(Path(dir, id))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		want, ended := events+2, true
		if i%10 == 0 {
			want, ended = events+1, false
		}
		if s.Records != want || s.Ended != ended {
			t.Errorf("%s: got %d records, ended %v; want %d, %v", id, s.Records, s.Ended, want, ended)
		}
	}
}

func TestInvalidSessionID(t *testing.T) {
	ids := map[string]struct{ id string }{
		"empty":       {""},
		"traversal":   {"../escape"},
		"slash":       {"a/b"},
		"dot":         {"a.b"},
		"space":       {"a b"},
		"nul":         {"a\x00b"},
		"non-ascii":   {"séance"},
		"too long":    {strings.Repeat("a", 129)},
		"absolute":    {"/etc/passwd"},
		"backslash":   {`a\b`},
		"dot dot":     {".."},
		"new line":    {"a\n"},
		"url escaped": {"a%2fb"},
	}
	for name, tc := range ids {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "recordings")
			l, logs := openLog(t, dir)
			l.Record(protocols.Event{Session: tc.id, Type: protocols.SessionStarted, Data: protocols.SessionStart{}})
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if got := l.Dropped(); got != 1 {
				t.Errorf("got %d dropped, want 1", got)
			}
			if !strings.Contains(logs.String(), "invalid session id") {
				t.Errorf("got log %q, want it to mention the invalid session id", logs.String())
			}
			for _, d := range []string{dir, parent} {
				entries, _ := os.ReadDir(d)
				for _, e := range entries {
					if e.Name() != "recordings" {
						t.Errorf("got file %s in %s, want none", e.Name(), d)
					}
				}
			}
		})
	}
	for _, id := range []string{"a", "A-z_0", strings.Repeat("x", 128)} {
		if !ValidSessionID(id) {
			t.Errorf("ValidSessionID(%q): got false, want true", id)
		}
	}
}

func TestMissedStartOpensLazily(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	evs := sessionEvents("late", 3)[1:] // no session.start
	for _, e := range evs {
		l.Record(e)
	}
	recs, err := readAll(t, Path(dir, "late"))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(recs) != len(evs) || recs[0].Type != protocols.TCPData || recs[0].Seq != 0 {
		t.Fatalf("got %d records starting with %+v, want %d starting with tcp.data seq 0", len(recs), recs[0], len(evs))
	}
}

func TestEventAfterEndDropped(t *testing.T) {
	dir := t.TempDir()
	l, logs := openLog(t, dir)
	for _, e := range sessionEvents("s", 2) {
		l.Record(e)
	}
	l.Record(protocols.Event{Session: "s", Type: protocols.TCPData, Data: protocols.TCPDataEvent{}})
	if l.Dropped() != 1 {
		t.Fatalf("got %d dropped, want 1", l.Dropped())
	}
	if !strings.Contains(logs.String(), errEnded.Error()) {
		t.Fatalf("got log %q, want it to say the recording ended", logs.String())
	}
	recs, err := readAll(t, Path(dir, "s"))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got := recs[len(recs)-1].Type; len(recs) != 4 || got != protocols.SessionEnded {
		t.Fatalf("got %d records ending with %s, want 4 ending with session.end", len(recs), got)
	}
}

func TestDuplicateStartRefused(t *testing.T) {
	dir := t.TempDir()
	path, before := validRecording(t, dir, "dup", 2)
	l, _ := openLog(t, dir)
	for _, e := range sessionEvents("dup", 2) {
		l.Record(e)
	}
	if got, want := l.Dropped(), uint64(4); got != want {
		t.Fatalf("got %d dropped, want %d", got, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatal("the existing recording changed")
	}
	l.mu.Lock()
	n := len(l.sessions)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("got %d sessions still open, want 0", n)
	}
}

func TestCloseLeavesOpenSessionsUnsealed(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	evs := sessionEvents("s", 4)
	for _, e := range evs[:3] {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l.Record(evs[3])
	if l.Dropped() != 1 {
		t.Fatalf("after Close: got %d dropped, want 1", l.Dropped())
	}
	s, err := Summarize(Path(dir, "s"))
	if err != nil || s.Ended || s.Records != 3 {
		t.Fatalf("got %+v, %v; want 3 records, not ended", s, err)
	}

	// A later Log continues the chain.
	l2, _ := openLog(t, dir)
	for _, e := range evs[3:] {
		l2.Record(e)
	}
	recs, err := readAll(t, Path(dir, "s"))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(recs) != len(evs) || recs[len(recs)-1].Type != protocols.SessionEnded {
		t.Fatalf("got %d records, want %d ending with session.end", len(recs), len(evs))
	}
}

func TestPeriodicFlush(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	l.Record(sessionEvents("s", 0)[0])
	// Wait for the flusher; no bound on how fast it must be.
	for {
		fi, err := os.Stat(Path(dir, "s"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := readAll(t, Path(dir, "s")); err != nil {
		t.Fatalf("Read while open: %v", err)
	}
}

func TestUnencodableData(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	l.Record(protocols.Event{Session: "s", Type: protocols.TCPData, Data: make(chan int)})
	if l.Dropped() != 1 {
		t.Fatalf("got %d dropped, want 1", l.Dropped())
	}
	if _, err := os.Stat(Path(dir, "s")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want no recording", err)
	}
}
