package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/protocols"
)

// lines splits a recording into its lines, without newlines.
func lines(b []byte) [][]byte {
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func join(ls [][]byte) []byte {
	return append(bytes.Join(ls, []byte("\n")), '\n')
}

func chainErr(t *testing.T, err error) *ChainError {
	t.Helper()
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v, want a *ChainError", err)
	}
	return ce
}

func writeRecording(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReadDetectsFlippedByte(t *testing.T) {
	dir := t.TempDir()
	path, valid := validRecording(t, dir, "flip", 4)
	ls := lines(valid)
	offset := 0
	for k, line := range ls {
		prevAt := bytes.LastIndex(line, []byte(`"prev":"`)) + len(`"prev":"`)
		for j := 0; j <= len(line); j++ { // j == len(line) is the newline
			b := bytes.Clone(valid)
			b[offset+j] ^= 0x01
			_, err := readFrom(bytes.NewReader(b), sessionOf(path), nil)
			last := k == len(ls)-1
			if err == nil {
				if !last || j == len(line) {
					t.Fatalf("line %d byte %d: got nil error, want a *ChainError", k, j)
				}
				continue // a value in the last record: only a seal can tell
			}
			want := k
			if j >= prevAt && j < len(line)-2 && k > 0 { // inside the prev hex
				want = k - 1 // the chain breaks between k-1 and k
			}
			if got := chainErr(t, err).Seq; got != want {
				t.Fatalf("line %d byte %d (%q): got seq %d, want %d: %v", k, j, line[j:min(j+1, len(line))], got, want, err)
			}
		}
		offset += len(line) + 1
	}
}

func TestReadDetectsRemovedAndReordered(t *testing.T) {
	dir := t.TempDir()
	path, valid := validRecording(t, dir, "s", 6)
	n := len(lines(valid))
	edits := map[string]struct {
		edit    func(ls [][]byte) [][]byte
		wantSeq int
		reason  string
	}{
		"remove first": {edit: func(ls [][]byte) [][]byte { return ls[1:] }, wantSeq: 0, reason: "missing"},
		"remove middle": {edit: func(ls [][]byte) [][]byte {
			return append(ls[:3:3], ls[4:]...)
		}, wantSeq: 3, reason: "missing"},
		"swap middle": {edit: func(ls [][]byte) [][]byte {
			ls[2], ls[3] = ls[3], ls[2]
			return ls
		}, wantSeq: 2, reason: "missing"},
		"swap last two": {edit: func(ls [][]byte) [][]byte {
			ls[n-2], ls[n-1] = ls[n-1], ls[n-2]
			return ls
		}, wantSeq: n - 2, reason: "missing"},
		"duplicate": {edit: func(ls [][]byte) [][]byte {
			return append(ls[:3:3], ls[2:]...)
		}, wantSeq: 3, reason: "out of order"},
		"empty line": {edit: func(ls [][]byte) [][]byte {
			return append(ls[:1:1], append([][]byte{{}}, ls[1:]...)...)
		}, wantSeq: 1, reason: "not a record"},
	}
	for name, tc := range edits {
		t.Run(name, func(t *testing.T) {
			writeRecording(t, path, join(tc.edit(lines(valid))))
			ce := chainErr(t, Read(path, func(Record) error { return nil }))
			if ce.Seq != tc.wantSeq || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("got %v, want seq %d, reason with %q", ce, tc.wantSeq, tc.reason)
			}
		})
	}

	t.Run("remove last", func(t *testing.T) {
		// Without its session.end the recording reads as not ended.
		ls := lines(valid)
		writeRecording(t, path, join(ls[:n-1]))
		s, err := Summarize(path)
		if err != nil || s.Ended {
			t.Fatalf("got %+v, %v; want a clean read, not ended", s, err)
		}
	})
}

func TestReadRefusesOtherSessionsRecords(t *testing.T) {
	dir := t.TempDir()
	_, valid := validRecording(t, dir, "mine", 2)
	renamed := Path(dir, "theirs")
	writeRecording(t, renamed, valid)
	ce := chainErr(t, Read(renamed, func(Record) error { return nil }))
	if ce.Seq != 0 {
		t.Fatalf("got %v, want seq 0", ce)
	}
	// Under a name that is not a session's, the records say whose they are.
	other := filepath.Join(dir, "copy.txt")
	writeRecording(t, other, valid)
	if err := Read(other, func(Record) error { return nil }); err != nil {
		t.Fatalf("got %v, want nil", err)
	}
}

func TestReadRefusesRecordAfterEnd(t *testing.T) {
	dir := t.TempDir()
	path, valid := validRecording(t, dir, "s", 1)
	ls := lines(valid)
	extra, err := encode(Record{V: Version, Seq: int64(len(ls)), Time: t0, Session: "s",
		Type: protocols.TCPData, Data: []byte(`{}`), Prev: hash(ls[len(ls)-1])})
	if err != nil {
		t.Fatal(err)
	}
	writeRecording(t, path, join(append(ls, extra)))
	ce := chainErr(t, Read(path, func(Record) error { return nil }))
	if ce.Seq != len(ls) || !strings.Contains(ce.Reason, "after session end") {
		t.Fatalf("got %v, want seq %d after session end", ce, len(ls))
	}
}

func TestReadReturnsCallbackError(t *testing.T) {
	dir := t.TempDir()
	path, _ := validRecording(t, dir, "s", 3)
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
		t.Fatalf("got %v after %d records, want %v after 2", err, n, stop)
	}
}

func TestReadMissingFile(t *testing.T) {
	err := Read(filepath.Join(t.TempDir(), "nope.jsonl"), func(Record) error { return nil })
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want %v", err, os.ErrNotExist)
	}
}

func TestReadRefusesLongRecord(t *testing.T) {
	defer func(n int) { maxLine = n }(maxLine)
	maxLine = 1 << 10
	b := append(bytes.Repeat([]byte("x"), maxLine+10), '\n')
	_, err := readFrom(bytes.NewReader(b), "", nil)
	if ce := chainErr(t, err); ce.Seq != 0 || !strings.Contains(ce.Reason, "longer") {
		t.Fatalf("got %v, want a too-long record 0", ce)
	}
}

// TestReadTruncated reads every prefix of a valid recording: cut at a line
// end it reads clean, anywhere else it is an error; it never panics.
func TestReadTruncated(t *testing.T) {
	_, valid := validRecording(t, t.TempDir(), "s", 3)
	for n := range len(valid) {
		prefix := valid[:n]
		var got int
		_, err := readFrom(bytes.NewReader(prefix), "s", func(Record) error { got++; return nil })
		atLineEnd := n == 0 || valid[n-1] == '\n'
		switch {
		case atLineEnd && err != nil:
			t.Fatalf("prefix %d (at a line end): got %v, want nil", n, err)
		case atLineEnd && got != bytes.Count(prefix, []byte("\n")):
			t.Fatalf("prefix %d: got %d records, want %d", n, got, bytes.Count(prefix, []byte("\n")))
		case !atLineEnd && err == nil:
			t.Fatalf("prefix %d (mid-record): got nil error, want one", n)
		case !atLineEnd:
			chainErr(t, err)
		}
	}
}

func FuzzRead(f *testing.F) {
	_, valid := validRecording(f, f.TempDir(), "fuzz", 3)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte{})
	f.Add([]byte("\n"))
	f.Add([]byte(`{"v":1,"seq":0,"time":"2026-01-01T00:00:00Z","session":"s","type":"session.start","data":{},"prev":""}` + "\n"))
	f.Add([]byte(`{"v":2}` + "\n"))
	f.Add([]byte(`{"v":1,"seq":-1}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n int
		tl, err := readFrom(bytes.NewReader(b), "", func(r Record) error {
			if r.Seq != int64(n) {
				t.Fatalf("got seq %d at position %d", r.Seq, n)
			}
			n++
			return nil
		})
		if err != nil {
			chainErr(t, err)
			return
		}
		if tl.size != int64(len(b)) {
			t.Fatalf("read clean but verified %d of %d bytes", tl.size, len(b))
		}
	})
}
