package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/postern/postern/protocols"
)

// TestCompact: a sealed recording written in many small blocks is
// rewritten with the same lines, smaller, and still verifies; Close waits
// for it.
func TestCompact(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	evs := sessionEvents("s-1", 0)
	l.Record(evs[0])
	for i := range 200 {
		l.Record(protocols.Event{Session: "s-1", Type: protocols.PostgresQuery,
			Data: &protocols.PostgresQueryEvent{SQL: fmt.Sprintf("SELECT %d FROM accounts", i), Rows: 1}})
	}
	l.Record(evs[1])
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	compacted, err := os.ReadFile(Path(dir, "s-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(Path(dir, "s-1"), trusted(t)); err != nil {
		t.Fatalf("compacted recording: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*"+compactExt)); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}

	// Compacting the small-block form of the same lines gives the same
	// lines, in fewer bytes.
	small := compressed(decoded(t, compacted))
	other := t.TempDir()
	writeFile(t, Path(other, "s-1"), small)
	if err := Compact(other, "s-1"); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(Path(other, "s-1"))
	if !bytes.Equal(bytes.Join(decoded(t, again), nil), bytes.Join(decoded(t, small), nil)) {
		t.Fatal("compacting changed the records")
	}
	if len(again) >= len(small) {
		t.Fatalf("compacted %d bytes, as written %d", len(again), len(small))
	}
	t.Logf("%d records: %d bytes as written, %d compacted", len(decoded(t, small)), len(small), len(again))
}

// TestCompactRefusesBroken: a recording that does not read cleanly is left
// as it is.
func TestCompactRefusesBroken(t *testing.T) {
	dir := t.TempDir()
	_, b := validRecording(t, dir, "s-1", 3)
	ls := decoded(t, b)
	ls = append(ls[:2:2], ls[3:]...)
	writeFile(t, Path(dir, "s-1"), compressed(ls))
	if err := Compact(dir, "s-1"); err == nil {
		t.Fatal("compacted a broken recording")
	}
	if after, _ := os.ReadFile(Path(dir, "s-1")); !bytes.Equal(after, compressed(ls)) {
		t.Fatal("the broken recording was changed")
	}
}
