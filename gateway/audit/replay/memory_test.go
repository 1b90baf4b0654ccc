package replay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/protocols"
)

// TestPlayFlatMemory: replay streams. A session of 130 MB of records (each
// query with 1 KiB of SQL and its captured rows) plays back while the heap
// stays within a few MiB of where it started.
func TestPlayFlatMemory(t *testing.T) {
	key, err := audit.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{Key: key, Logger: slog.New(slog.DiscardHandler), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const id, queries = "big", 100_000
	sql := "SELECT " + strings.Repeat("a_column, ", 100) + "x FROM t WHERE id = $1"
	l.Record(event(id, 0, protocols.SessionStarted, &protocols.SessionStart{Identity: "spiffe://postern.local/user/ann", Protocol: protocols.Postgres, Database: "app"}))
	for i := range queries {
		v := fmt.Sprint(i)
		l.Record(event(id, i, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: sql, Params: []*string{&v},
			Protocol: "extended", Verdict: protocols.VerdictAllow, Completed: []string{"SELECT 1"}, Rows: 1,
			Columns: []string{"x"}, Result: [][]*string{{&v}}}))
	}
	l.Record(event(id, queries+1, protocols.SessionEnded, &protocols.SessionEnd{Outcome: protocols.OutcomeOK}))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := audit.Find(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(f.Path)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	n := &countingWriter{}
	err = Play(context.Background(), f.Path, n, Options{Speed: 0, Format: FormatText})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("%d bytes on disk, %d bytes of transcript, heap grew at most %.1f MiB", fi.Size(), n.n, float64(grew)/(1<<20))
	if n.n < 100<<20 {
		t.Fatalf("transcript of %d bytes, want the whole session", n.n)
	}
	if grew > 32<<20 {
		t.Fatalf("heap grew %.1f MiB while replaying, want it flat (< 32 MiB)", float64(grew)/(1<<20))
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countingWriter)(nil)
