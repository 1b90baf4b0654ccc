package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/protocols"
)

// rechain re-links lines with fresh hashes, as someone without the key
// would after changing records, and, if key is not nil, re-signs the seal.
func rechain(t *testing.T, ls [][]byte, key *Key) [][]byte {
	t.Helper()
	out := make([][]byte, len(ls))
	prev := ""
	for i, l := range ls {
		r, ok := parseLine(l)
		if !ok {
			t.Fatalf("line %d does not parse: %s", i, l)
		}
		r.Seq, r.Prev = int64(i), prev
		if r.Type == SealType && key != nil {
			r.Data = key.seal(r.Session, r.Seq, prev)
		}
		line, err := appendLine(nil, r, []byte(r.Prev))
		if err != nil {
			t.Fatal(err)
		}
		out[i], prev = line, hash(line)
	}
	return out
}

// TestVerifyTampering: every way of changing a sealed recording is found,
// and the error names the record.
func TestVerifyTampering(t *testing.T) {
	const n = 10 // records: start, 10 data, end, seal = 13
	tests := map[string]struct {
		tamper  func(t *testing.T, b []byte) []byte
		wantSeq int
		want    string
	}{
		"byte flipped in the compressed file": {
			tamper: func(t *testing.T, b []byte) []byte {
				b[len(b)/2] ^= 0x40
				return b
			},
			wantSeq: -1, // wherever the damaged chunk is
		},
		"record changed": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				ls[4] = bytes.Replace(ls[4], []byte(`"bytes":4`), []byte(`"bytes":5`), 1)
				return compressed(ls)
			},
			wantSeq: 4, want: "does not hash",
		},
		"record removed": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				return compressed(append(ls[:5:5], ls[6:]...))
			},
			wantSeq: 5, want: "missing",
		},
		"records swapped": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				ls[3], ls[7] = ls[7], ls[3]
				return compressed(ls)
			},
			wantSeq: 3, want: "missing",
		},
		"cut short in a chunk": {
			// The first record is a chunk of its own; the rest of a
			// short recording is the last chunk.
			tamper:  func(t *testing.T, b []byte) []byte { return b[:len(b)-3] },
			wantSeq: 1, want: "cut short",
		},
		"seal removed": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				return compressed(ls[:len(ls)-1])
			},
			wantSeq: n + 2, want: "without a seal",
		},
		"end and seal removed": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				return compressed(ls[:len(ls)-2])
			},
			wantSeq: n + 1, want: "without a seal",
		},
		"chain rebuilt after a change, old seal kept": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				ls[2] = bytes.Replace(ls[2], []byte(`"bytes":2`), []byte(`"bytes":9`), 1)
				return compressed(rechain(t, ls, nil))
			},
			wantSeq: n + 2, want: "does not verify",
		},
		"chain rebuilt and sealed with another key": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				ls = append(ls[:6:6], ls[7:]...)
				return compressed(rechain(t, ls, otherKey))
			},
			wantSeq: n + 1, want: "not trusted",
		},
		"seal edited": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				last := ls[len(ls)-1]
				i := bytes.Index(last, []byte(`"sig":"`)) + len(`"sig":"`)
				if last[i] == 'a' {
					last[i] = 'b'
				} else {
					last[i] = 'a'
				}
				return compressed(ls)
			},
			wantSeq: n + 2, want: "seal",
		},
		"record after the seal": {
			tamper: func(t *testing.T, b []byte) []byte {
				ls := decoded(t, b)
				return compressed(rechain(t, append(ls, ls[3]), testKey))
			},
			wantSeq: n + 3, want: "after the seal",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path, b := validRecording(t, dir, "s-1", n)
			if res, err := Verify(path, trusted(t)); err != nil || !res.Sealed || res.Records != n+3 {
				t.Fatalf("before tampering: %+v, %v", res, err)
			}
			writeFile(t, path, tt.tamper(t, b))
			_, err := Verify(path, trusted(t))
			ce := chainErr(t, err)
			if tt.wantSeq >= 0 && ce.Seq != tt.wantSeq {
				t.Errorf("got record %d (%v), want %d", ce.Seq, ce, tt.wantSeq)
			}
			if !strings.Contains(ce.Reason, tt.want) {
				t.Errorf("got reason %q, want it to say %q", ce.Reason, tt.want)
			}
		})
	}
}

// TestVerifyEveryPrefixFails: a sealed recording cut anywhere does not
// verify (the truncation test of the reader).
func TestVerifyEveryPrefixFails(t *testing.T) {
	dir := t.TempDir()
	path, b := validRecording(t, dir, "s-1", 3)
	cut := filepath.Join(dir, "cut", filepath.Base(path))
	os.Mkdir(filepath.Dir(cut), 0o700)
	for i := range len(b) {
		writeFile(t, cut, b[:i])
		if _, err := Verify(cut, trusted(t)); err == nil {
			t.Fatalf("a prefix of %d of %d bytes verified", i, len(b))
		}
	}
}

func TestReadRefusesOtherSessionsRecords(t *testing.T) {
	dir := t.TempDir()
	path, b := validRecording(t, dir, "s-1", 2)
	if err := os.Rename(path, Path(dir, "s-2")); err != nil {
		t.Fatal(err)
	}
	_ = b
	_, err := Verify(Path(dir, "s-2"), trusted(t))
	if ce := chainErr(t, err); ce.Seq != 0 || !strings.Contains(ce.Reason, `session "s-1"`) {
		t.Fatalf("got %v, want record 0 of another session", ce)
	}
}

func TestReadReturnsCallbackError(t *testing.T) {
	path, _ := validRecording(t, t.TempDir(), "s-1", 2)
	stop := errors.New("stop")
	n := 0
	err := Read(path, func(Record) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("got %v after %d records, want the callback's error after 2", err, n)
	}
}

func TestReadMissingFile(t *testing.T) {
	if err := Read(filepath.Join(t.TempDir(), "nope"+Ext), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want not exist", err)
	}
}

func TestReadRefusesLongRecord(t *testing.T) {
	path, _ := validRecording(t, t.TempDir(), "s-1", 1)
	defer func(n int) { maxLine = n }(maxLine)
	maxLine = 100
	if ce := chainErr(t, Read(path, nil)); ce.Seq != 0 || !strings.Contains(ce.Reason, "longer") {
		t.Fatalf("got %v, want record 0 too long", ce)
	}
}

// TestReadVersion1: recordings of the first format stay readable, with
// their own rules (canonical lines, no seal).
func TestReadVersion1(t *testing.T) {
	dir := t.TempDir()
	var ls [][]byte
	prev := ""
	for i, e := range sessionEvents("old", 2) {
		data, _ := json.Marshal(e.Data)
		line, err := encode(Record{V: 1, Seq: int64(i), Time: e.Time, Session: e.Session, Type: e.Type, Data: data, Prev: prev})
		if err != nil {
			t.Fatal(err)
		}
		ls, prev = append(ls, line), hash(line)
	}
	path := filepath.Join(dir, "old"+ExtV1)
	writeFile(t, path, append(bytes.Join(ls, []byte("\n")), '\n'))
	res, err := Verify(path, trusted(t))
	if err != nil || res.Records != 4 || !res.Ended || res.Sealed || res.Kind != V1 {
		t.Fatalf("got %+v, %v; want 4 records, ended, not sealed", res, err)
	}
	// The last record of a version 1 recording is protected by its
	// canonical form only.
	ls[3] = bytes.Replace(ls[3], []byte(`{"outcome"`), []byte(`{ "outcome"`), 1)
	writeFile(t, path, append(bytes.Join(ls, []byte("\n")), '\n'))
	if ce := chainErr(t, Read(path, nil)); ce.Seq != 3 {
		t.Fatalf("got %v, want record 3", ce)
	}
}

// TestParseLineMatchesJSON: the fast parser reads what encoding/json reads,
// and declines what it does not handle.
func TestParseLineMatchesJSON(t *testing.T) {
	path, b := validRecording(t, t.TempDir(), "s-1", 3)
	_ = path
	for i, l := range decoded(t, b) {
		got, ok := parseLine(l)
		var want Record
		if err := json.Unmarshal(l, &want); err != nil {
			t.Fatal(err)
		}
		if !ok || got.V != want.V || got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Session != want.Session ||
			got.Type != want.Type || !bytes.Equal(got.Data, want.Data) || got.Prev != want.Prev {
			t.Fatalf("line %d: got %+v (%v), want %+v", i, got, ok, want)
		}
	}
	// Truncation: no prefix of a record parses.
	line := decoded(t, b)[1]
	for i := range len(line) {
		if _, ok := parseLine(line[:i]); ok {
			t.Fatalf("prefix of %d bytes parsed: %s", i, line[:i])
		}
	}
	for _, l := range []string{
		`{"v":2,"seq":1,"time":"2026-01-01T00:00:00Z","session":"a","type":"t","data":{},"prev":"}`,
		`{"v":2,"seq":1,"time":"2026-01-01T00:00:00Z","session":"a\u0041","type":"t","data":{},"prev":""}`,
		`{"v":2,"seq":01,"time":"2026-01-01T00:00:00Z","session":"a","type":"t","data":{},"prev":""}`,
		`{"seq":1,"v":2,"time":"2026-01-01T00:00:00Z","session":"a","type":"t","data":{},"prev":""}`,
		`{"v":2,"seq":1,"time":"2026-01-01T00:00:00Z","session":"a","type":"t","data":,"prev":""}`,
		`{"v":2,"seq":1,"time":"2026-01-01T00:00:00Z","session":"a","type":"t","data":{},"prev":"XYZ"}`,
	} {
		if _, ok := parseLine([]byte(l)); ok {
			t.Errorf("parseLine accepted %s", l)
		}
	}
}

func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	_, b := validRecording(f, dir, "s-1", 3)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(plain(decoded(f, b))) // the same recording as the writer maps it, uncompressed
	f.Add(append(plain(decoded(f, b)), 0, 0, 0))
	f.Add(compressed([][]byte{[]byte(`{"v":2,"seq":0,"time":"2026-01-01T00:00:00Z","session":"s-1","type":"session.start","data":{},"prev":""}`)}))
	f.Add([]byte{})
	keys := trusted(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Never a panic; a seal only after records (and verified by keys).
		tl, err := readFrom(bytes.NewReader(data), Sealed, "s-1", keys, func(Record, []byte) error { return nil })
		if err == nil && tl.sealed && tl.next == 0 {
			t.Fatal("sealed without records")
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	// A long Postgres session, the records as the gateway writes them.
	l, err := Open(dir, Options{Key: testKey, FlushInterval: 100 * 1e6})
	if err != nil {
		b.Fatal(err)
	}
	l.Record(protocols.Event{Session: "big", Type: protocols.SessionStarted, Data: &protocols.SessionStart{Identity: "spiffe://postern.local/user/ann", Protocol: protocols.Postgres}})
	for i := range 200_000 {
		l.Record(protocols.Event{Session: "big", Type: protocols.PostgresQuery, Data: &protocols.PostgresQueryEvent{
			SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{ptr(strings.Repeat("7", i%7+1))},
			Protocol: "extended", Class: "read", Verdict: "allow", Rule: "bench", Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.1}})
	}
	l.Record(protocols.Event{Session: "big", Type: protocols.SessionEnded, Data: &protocols.SessionEnd{Outcome: "ok"}})
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(Path(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	keys := trusted(b)
	f, err := os.Open(Path(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	d, _ := newDecoder(f)
	raw, err := io.Copy(io.Discard, d)
	d.Close()
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("recording: 200,003 records, %.1f MB of records in %.1f MB on disk", float64(raw)/1e6, float64(fi.Size())/1e6)
	// MB/s of records: a 100 MB recording is 100 MB of records.
	b.SetBytes(raw)
	for b.Loop() {
		res, err := Verify(Path(dir, "big"), keys)
		if err != nil || !res.Sealed {
			b.Fatal(res, err)
		}
	}
}

func ptr(s string) *string { return &s }

// TestReadFollowsSeal: an open recording listed before it was sealed is
// read under its sealed name.
func TestReadFollowsSeal(t *testing.T) {
	dir := t.TempDir()
	validRecording(t, dir, "s-1", 2)
	res, err := Verify(OpenPath(dir, "s-1"), trusted(t))
	if err != nil || !res.Sealed || res.Kind != Sealed {
		t.Fatalf("got %+v, %v", res, err)
	}
}
