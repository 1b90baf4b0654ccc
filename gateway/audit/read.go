package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/protocols"
)

// Read calls fn with each record of the recording at path, in order, while
// verifying the hash chain. It returns a *ChainError naming the first record
// that is malformed, out of place, or whose hash the next record does not
// carry (that is, the record was changed, or the next one's prev was), and
// it returns fn's error if fn fails. Because Read streams, fn may already
// have seen records at and past the one an error names.
//
// If the file is named <session>.jsonl, its records must belong to that
// session. A recording without a final session.end (one still being
// written, or cut short) reads without error; Summarize tells it apart.
func Read(path string, fn func(Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening recording: %w", err)
	}
	defer f.Close()
	_, err = readFrom(f, sessionOf(path), fn)
	return err
}

// sessionOf returns the session a recording's file name says it holds, or
// "" if the name is not <session>.jsonl.
func sessionOf(path string) string {
	id, ok := strings.CutSuffix(filepath.Base(path), Ext)
	if !ok || !ValidSessionID(id) {
		return ""
	}
	return id
}

// tail is what a reader knows at the end of the verified part of a
// recording: enough to append to it.
type tail struct {
	next    int64  // seq of the next record
	prev    string // prev of the next record
	session string
	ended   bool
	size    int64 // bytes of complete verified lines, newlines included
	torn    int64 // bytes of an incomplete last line, if that is the error
	last    time.Time
}

// readFrom verifies the recording in r, calling fn (if not nil) with each
// record. want, if not empty, is the session the records must belong to.
func readFrom(r io.Reader, want string, fn func(Record) error) (tail, error) {
	t := tail{session: want}
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		var (
			complete bool
			err      error
		)
		line, complete, err = readLine(br, line[:0])
		if err == io.EOF && len(line) == 0 {
			return t, nil
		}
		if errors.Is(err, errTooLong) {
			return t, &ChainError{Seq: int(t.next), Reason: fmt.Sprintf("record longer than %d bytes", maxLine)}
		}
		if err != nil && err != io.EOF {
			return t, fmt.Errorf("reading record %d: %w", t.next, err)
		}
		if !complete {
			t.torn = int64(len(line))
			return t, &ChainError{Seq: int(t.next), Reason: "incomplete record at end of file (no newline)"}
		}
		rec, err := t.check(line)
		if err != nil {
			return t, err
		}
		if fn != nil {
			if err := fn(rec); err != nil {
				return t, err
			}
		}
	}
}

var errTooLong = errors.New("line too long")

// maxLine is MaxRecordSize, smaller in tests.
var maxLine = MaxRecordSize

// readLine appends the next line of br to buf, without its newline, and
// reports whether it ended with one.
func readLine(br *bufio.Reader, buf []byte) ([]byte, bool, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > maxLine+1 {
			return buf, false, errTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return buf, false, err
		}
	}
}

// check verifies line as the next record of t and advances t past it.
func (t *tail) check(line []byte) (Record, error) {
	i := t.next
	bad := func(seq int64, format string, args ...any) (Record, error) {
		return Record{}, &ChainError{Seq: int(seq), Reason: fmt.Sprintf(format, args...)}
	}
	var rec Record
	if err := json.Unmarshal(line, &rec); err != nil {
		return bad(i, "not a record: %v", err)
	}
	if rec.V != Version {
		return bad(i, "unsupported record version %d", rec.V)
	}
	if canon, err := encode(rec); err != nil || !bytes.Equal(canon, line) {
		return bad(i, "record is not in canonical form (edited?)")
	}
	switch {
	case rec.Seq > i:
		return bad(i, "record %d is missing (found seq %d)", i, rec.Seq)
	case rec.Seq < i:
		return bad(i, "record out of order (found seq %d)", rec.Seq)
	}
	if rec.Prev != t.prev {
		if i == 0 {
			return bad(0, "first record has a prev hash")
		}
		return bad(i-1, "record %d does not hash to the prev of record %d: one of them was changed", i-1, i)
	}
	if !ValidSessionID(rec.Session) {
		return bad(i, "invalid session id %q", rec.Session)
	}
	if t.session == "" {
		t.session = rec.Session
	}
	if rec.Session != t.session {
		return bad(i, "record of session %q in the recording of %q", rec.Session, t.session)
	}
	if rec.Type == "" {
		return bad(i, "record has no type")
	}
	if t.ended {
		return bad(i, "record after session end")
	}
	t.ended = rec.Type == protocols.SessionEnded
	t.next++
	t.prev = hash(line)
	t.size += int64(len(line)) + 1
	t.last = rec.Time
	return rec, nil
}

// Summary describes a recording.
type Summary struct {
	Session string
	Records int
	First   time.Time // time of the first record
	Last    time.Time // time of the last record
	Ended   bool      // the last record is a session.end
	Start   *protocols.SessionStart
	End     *protocols.SessionEnd
}

// Summarize reads the recording at path and describes it. On a broken
// recording it returns the summary of the part before the break with Read's
// error.
func Summarize(path string) (Summary, error) {
	var s Summary
	err := Read(path, func(r Record) error {
		if s.Records == 0 {
			s.Session, s.First = r.Session, r.Time
		}
		s.Records++
		s.Last = r.Time
		switch r.Type {
		case protocols.SessionStarted:
			var d protocols.SessionStart
			if json.Unmarshal(r.Data, &d) == nil {
				s.Start = &d
			}
		case protocols.SessionEnded:
			var d protocols.SessionEnd
			if json.Unmarshal(r.Data, &d) == nil {
				s.End = &d
			}
			s.Ended = true
		}
		return nil
	})
	if s.Session == "" {
		s.Session = sessionOf(path)
	}
	return s, err
}

// List returns the session ids of the recordings in dir, sorted.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing recordings: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if id := sessionOf(e.Name()); id != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}
