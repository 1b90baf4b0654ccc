package audit

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/postern/postern/protocols"
)

func lastEnd(t *testing.T, path string) (Record, protocols.SessionEnd) {
	t.Helper()
	recs, err := readAll(t, path)
	if err != nil {
		t.Fatalf("Read after recovery: %v", err)
	}
	last := recs[len(recs)-1]
	if last.Type != protocols.SessionEnded {
		t.Fatalf("got last record %s, want session.end", last.Type)
	}
	var end protocols.SessionEnd
	if err := json.Unmarshal(last.Data, &end); err != nil {
		t.Fatal(err)
	}
	return last, end
}

func TestRecoverUnsealed(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir)
	for _, e := range sessionEvents("done", 2) {
		l.Record(e)
	}
	cut := sessionEvents("cut", 5)
	cut = cut[:len(cut)-1]
	for _, e := range cut {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	doneBefore, _ := os.ReadFile(Path(dir, "done"))

	n, err := RecoverUnsealed(dir)
	if err != nil || n != 1 {
		t.Fatalf("got %d, %v; want 1, nil", n, err)
	}
	last, end := lastEnd(t, Path(dir, "cut"))
	// Events 1..5 carry 1..5 bytes, odd ones in, even ones out.
	if end.Outcome != OutcomeTruncated || end.BytesIn != 1+3+5 || end.BytesOut != 2+4 || end.Duration != 5 {
		t.Fatalf("got end %+v, want truncated with 9 bytes in, 6 out, 5ms", end)
	}
	if last.Seq != int64(len(cut)) || !last.Time.Equal(cut[len(cut)-1].Time) {
		t.Fatalf("got last record %+v, want seq %d at the last event's time", last, len(cut))
	}
	if doneAfter, _ := os.ReadFile(Path(dir, "done")); string(doneAfter) != string(doneBefore) {
		t.Fatal("an ended recording was changed")
	}

	if n, err := RecoverUnsealed(dir); err != nil || n != 0 {
		t.Fatalf("second recovery: got %d, %v; want 0, nil", n, err)
	}
}

func TestRecoverCases(t *testing.T) {
	full := func(t *testing.T, dir string) []byte {
		_, b := validRecording(t, dir, "s", 3)
		return b
	}
	cases := map[string]struct {
		content   func(t *testing.T, dir string) []byte
		wantN     int
		wantErr   bool
		wantSeq   int64
		wantInErr string
	}{
		"empty file": {
			content: func(*testing.T, string) []byte { return nil },
			wantN:   1, wantSeq: 0,
		},
		"torn last record": {
			content: func(t *testing.T, dir string) []byte {
				ls := lines(full(t, dir))
				b := join(ls[:3])
				return append(b, ls[3][:10]...)
			},
			wantN: 1, wantSeq: 3, wantInErr: "incomplete last record (10 bytes)",
		},
		"broken in the middle": {
			content: func(t *testing.T, dir string) []byte {
				ls := lines(full(t, dir))
				return join(append(ls[:1:1], ls[2:4]...))
			},
			wantErr: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			content := tc.content(t, dir)
			path := Path(dir, "s")
			writeRecording(t, path, content)
			n, err := RecoverUnsealed(dir)
			if n != tc.wantN || (err != nil) != tc.wantErr {
				t.Fatalf("got %d, %v; want %d, error %v", n, err, tc.wantN, tc.wantErr)
			}
			if tc.wantErr {
				if after, _ := os.ReadFile(path); string(after) != string(content) {
					t.Fatal("a broken recording was changed")
				}
				return
			}
			last, end := lastEnd(t, path)
			if last.Seq != tc.wantSeq || end.Outcome != OutcomeTruncated || !strings.Contains(end.Error, tc.wantInErr) {
				t.Fatalf("got %+v with %+v, want seq %d truncated mentioning %q", last, end, tc.wantSeq, tc.wantInErr)
			}
		})
	}
}

func TestRecoverMissingDir(t *testing.T) {
	n, err := RecoverUnsealed(t.TempDir() + "/recordings")
	if n != 0 || err != nil {
		t.Fatalf("got %d, %v; want 0, nil", n, err)
	}
}
