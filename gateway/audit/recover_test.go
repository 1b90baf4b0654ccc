package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// unsealed leaves a recording of start, n tcp.data and a query, not ended,
// as a crash does.
func unsealed(t *testing.T, dir, id string, n int) {
	t.Helper()
	l, _ := openLog(t, dir, Options{FlushInterval: time.Hour})
	evs := sessionEvents(id, n)
	for _, e := range evs[:len(evs)-1] {
		l.Record(e)
	}
	l.Record(protocols.Event{Session: id, Time: t0.Add(time.Second), Type: protocols.PostgresQuery,
		Data: &protocols.PostgresQueryEvent{SQL: "select 1"}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverUnsealed(t *testing.T) {
	tests := map[string]struct {
		damage  func(t *testing.T, path string)
		records int // read back before the closing end and seal
		note    string
	}{
		"clean stop": {records: 5},
		"torn last write": {
			damage: func(t *testing.T, path string) {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				// Into the query, the last record.
				if err := os.Truncate(path, fi.Size()-20); err != nil {
					t.Fatal(err)
				}
			},
			records: 4, note: "could not be read",
		},
		"killed: reserved bytes after the records": {
			damage: func(t *testing.T, path string) {
				b, _ := os.ReadFile(path)
				writeFile(t, path, append(b, make([]byte, mapInitial)...))
			},
			records: 5,
		},
		"killed mid-copy": {
			damage: func(t *testing.T, path string) {
				b, _ := os.ReadFile(path)
				// The start of the query, zeros where the rest would be,
				// then a later part that reached the page first.
				b = append(b[:len(b)-30], make([]byte, 20)...)
				writeFile(t, path, append(b, `ne"}`+"\n"...))
			},
			records: 4, note: "could not be read",
		},
		"legacy compressed open recording": {
			damage: func(t *testing.T, path string) {
				b, _ := os.ReadFile(path)
				os.Remove(path)
				writeFile(t, strings.TrimSuffix(path, OpenExt)+OpenExtZst, compressed(decoded(t, b)))
			},
			records: 5,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			unsealed(t, dir, "s-1", 3)
			validRecording(t, dir, "s-2", 1)
			if tt.damage != nil {
				tt.damage(t, OpenPath(dir, "s-1"))
			}
			idx := &memIndex{}
			n, err := RecoverUnsealed(context.Background(), dir, testKey, idx)
			if err != nil || n != 1 {
				t.Fatalf("RecoverUnsealed: %d, %v; want 1", n, err)
			}
			res, err := Verify(Path(dir, "s-1"), trusted(t))
			if err != nil || !res.Sealed || res.Records != tt.records+2 {
				t.Fatalf("got %+v, %v; want %d records, sealed", res, err, tt.records+2)
			}
			recs, _ := readAll(t, Path(dir, "s-1"))
			var end protocols.SessionEnd
			json.Unmarshal(recs[len(recs)-2].Data, &end)
			wantIn, wantOut := int64(1+3), int64(2)

			if end.Outcome != OutcomeTruncated || end.BytesIn != wantIn || end.BytesOut != wantOut || !strings.Contains(end.Error, tt.note) {
				t.Errorf("closing record %+v", end)
			}
			if tt.records == 5 && !recs[len(recs)-2].Time.Equal(t0.Add(time.Second)) {
				t.Errorf("closing record at %v, want the last record's time", recs[len(recs)-2].Time)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "s-1.open*")); len(left) != 0 {
				t.Errorf("open file left: %v", left)
			}
			if row, ok := idx.get("s-1"); !ok || row.Outcome != OutcomeTruncated || row.Status != StatusSealed || row.Events != int64(tt.records+2) {
				t.Errorf("index row %+v", row)
			}
			if n, err := RecoverUnsealed(context.Background(), dir, testKey, idx); n != 0 || err != nil {
				t.Errorf("second run: %d, %v", n, err)
			}
		})
	}
}

// TestRecoverLeavesBrokenChainAlone: a recording changed before its end is
// evidence; recovery does not seal over it.
func TestRecoverLeavesBrokenChainAlone(t *testing.T) {
	dir := t.TempDir()
	unsealed(t, dir, "s-1", 3)
	path := OpenPath(dir, "s-1")
	b, _ := os.ReadFile(path)
	ls := decoded(t, b)
	ls[1] = []byte(strings.Replace(string(ls[1]), `"bytes":1`, `"bytes":7`, 1))
	writeFile(t, path, plain(ls))
	n, err := RecoverUnsealed(context.Background(), dir, testKey, nil)
	if n != 0 || err == nil || !strings.Contains(err.Error(), "record 1") {
		t.Fatalf("got %d, %v; want an error naming record 1", n, err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(plain(ls)) {
		t.Fatal("the broken recording was changed")
	}
}

// TestRecoverSealedOpen: a sealed recording a stop left uncompressed (open
// name) is compressed, not sealed again; one a stop left both compressed
// and open loses the open copy.
func TestRecoverSealedOpen(t *testing.T) {
	dir := t.TempDir()
	_, b := validRecording(t, dir, "s-1", 3)
	want := decoded(t, b)
	os.Remove(Path(dir, "s-1"))
	writeFile(t, OpenPath(dir, "s-1"), plain(want))
	validRecording(t, dir, "s-2", 3)
	s2 := decoded(t, readFileT(t, Path(dir, "s-2")))
	writeFile(t, OpenPath(dir, "s-2"), plain(s2))
	n, err := RecoverUnsealed(context.Background(), dir, testKey, nil)
	if n != 2 || err != nil {
		t.Fatalf("RecoverUnsealed: %d, %v", n, err)
	}
	for id, lines := range map[string][][]byte{"s-1": want, "s-2": s2} {
		if got := decoded(t, readFileT(t, Path(dir, id))); !bytes.Equal(plain(got), plain(lines)) {
			t.Errorf("%s: records changed", id)
		}
		if _, err := os.Stat(OpenPath(dir, id)); !os.IsNotExist(err) {
			t.Errorf("%s: open file left: %v", id, err)
		}
	}
	// Different open and sealed files are both kept.
	writeFile(t, OpenPath(dir, "s-2"), plain(s2[:3]))
	if n, err := RecoverUnsealed(context.Background(), dir, testKey, nil); n != 0 || err == nil {
		t.Fatalf("got %d, %v; want an error", n, err)
	}
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecoverMissingDir(t *testing.T) {
	if n, err := RecoverUnsealed(context.Background(), t.TempDir()+"/none", testKey, nil); n != 0 || err != nil {
		t.Fatalf("got %d, %v", n, err)
	}
}
