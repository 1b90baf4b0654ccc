package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// Read calls fn with each record of the recording at path, in order (the
// seal included), while verifying the hash chain. It returns a *ChainError
// naming the first record that is malformed, out of place, or whose hash
// the next record does not carry (that is, the record was changed, or the
// next one's prev was), and it returns fn's error if fn fails. Because Read
// streams, fn may already have seen records at and past the one an error
// names.
//
// Read does not check the seal's signature, and a recording without a seal
// (one being written, or cut short) reads without error; Verify does both.
func Read(path string, fn func(Record) error) error {
	var each func(Record, []byte) error
	if fn != nil {
		each = func(r Record, _ []byte) error { return fn(r) }
	}
	_, err := readFile(path, nil, each)
	return err
}

// Result is what verifying a recording found.
type Result struct {
	Session string
	Kind    Kind
	Records int  // records that verified, the seal included
	Ended   bool // a session.end was read
	Sealed  bool // a seal was read and its signature verified
	Open    bool // not sealed, but the index says the session is still open (Archive.Verify)
	KeyID   string
	Size    int64 // bytes of the file
}

// Verify reads the recording at path and checks it whole: the hash chain,
// the session of every record, and the seal, which must be the last record
// and must verify with one of keys. A version 1 recording has no seal and
// verifies as far as version 1 can (docs/AUDIT.md). A recording still
// being written fails with a *ChainError saying it is not sealed; callers
// that know the session is open may treat that as in progress.
func Verify(path string, keys Keys) (Result, error) {
	return readFile(path, keys, nil)
}

// ReadVerified is Read and Verify at once: it calls fn with each record as
// it reads, and checks the seal at the end with keys. It returns what
// Verify returns.
func ReadVerified(path string, keys Keys, fn func(Record) error) (Result, error) {
	if keys == nil {
		keys = Keys{}
	}
	return readFile(path, keys, func(r Record, _ []byte) error { return fn(r) })
}

// ErrUnsealed is wrapped by the *ChainError of a version 2 recording that
// ends, intact, without a seal.
var ErrUnsealed = errors.New("recording is not sealed")

func readFile(path string, keys Keys, fn func(Record, []byte) error) (Result, error) {
	id, kind := ParseName(path)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && kind == Unsealed {
		// Sealed (and renamed) since the caller listed it.
		if f, err = os.Open(Path(filepath.Dir(path), id)); err == nil {
			kind = Sealed
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("opening recording: %w", err)
	}
	defer f.Close()
	if kind == NotRecording {
		kind = Sealed // a copy under another name: read as version 2
	}
	res := Result{Kind: kind}
	if fi, err := f.Stat(); err == nil {
		res.Size = fi.Size()
	}
	t, err := readFrom(f, kind, id, keys, fn)
	res.Session, res.Records, res.Ended, res.Sealed, res.KeyID = t.session, int(t.next), t.ended, t.sealed, t.keyID
	if err == nil && keys != nil && kind != V1 && !t.sealed {
		err = &ChainError{Seq: int(t.next), Reason: "recording ends without a seal: it was cut short, or is still being written", err: ErrUnsealed}
	}
	return res, err
}

// tail is what a reader knows at the end of the verified part of a
// recording.
type tail struct {
	version int
	next    int64     // seq of the next record
	prev    chainHash // prev of the next record
	session string
	ended   bool
	sealed  bool // a seal was read (and verified, if there were keys)
	keyID   string
	keys    Keys
	size    int64 // bytes of complete verified lines, newlines included
	torn    int64 // bytes of an incomplete last line, if that is the error
	cut     error // why the rest of the file cannot be read, if that is the error
	last    time.Time
}

// readFrom verifies the recording in r, calling fn (if not nil) with each
// record and its line. want, if not empty, is the session the records must
// belong to. keys, if not nil, verify the seal.
func readFrom(r io.Reader, kind Kind, want string, keys Keys, fn func(Record, []byte) error) (tail, error) {
	t := tail{session: want, keys: keys, version: 2}
	br := bufio.NewReaderSize(r, 64<<10)
	plain := true
	switch magic, _ := br.Peek(4); {
	case kind == V1:
		t.version = 1
	case bytes.Equal(magic, zstdMagic):
		d, err := newDecoder(br)
		if err != nil {
			return t, fmt.Errorf("reading recording: %w", err)
		}
		defer d.Close()
		br, plain = bufio.NewReaderSize(d, 64<<10), false
	default:
		// JSON lines as the writer maps them: whatever follows the
		// first zero byte was never written (JSON has none).
		br = bufio.NewReaderSize(&untilZero{r: br}, 64<<10)
	}
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
			if t.version == 1 {
				return t, fmt.Errorf("reading record %d: %w", t.next, err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) && kind == Unsealed && len(line) == 0 {
				// The frame being written has no end yet: everything
				// written so far has been read.
				return t, nil
			}
			t.torn, t.cut = int64(len(line)), err
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return t, &ChainError{Seq: int(t.next), Reason: "recording cut short: its last chunk is incomplete", err: err}
			}
			return t, &ChainError{Seq: int(t.next), Reason: fmt.Sprintf("chunk holding this record is damaged: %v", err), err: err}
		}
		if !complete {
			t.torn, t.cut = int64(len(line)), errors.New("incomplete record")
			if plain && kind == Unsealed && t.version == 2 {
				// Being written, or the write a crash cut short: the
				// records before it are all there is.
				return t, nil
			}
			return t, &ChainError{Seq: int(t.next), Reason: "incomplete record at end of file (no newline)"}
		}
		rec, err := t.check(line)
		if err != nil {
			return t, err
		}
		if fn != nil {
			rec.Data = append(json.RawMessage(nil), rec.Data...) // not the line buffer, reused
			if err := fn(rec, line); err != nil {
				return t, err
			}
		}
	}
}

var errTooLong = errors.New("line too long")

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// untilZero reads r up to its first zero byte.
type untilZero struct {
	r    io.Reader
	done bool
}

func (u *untilZero) Read(p []byte) (int, error) {
	if u.done {
		return 0, io.EOF
	}
	n, err := u.r.Read(p)
	if i := bytes.IndexByte(p[:n], 0); i >= 0 {
		u.done = true
		return i, nil
	}
	return n, err
}

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
	rec, ok := parseLine(line)
	if !ok {
		rec = Record{}
		if err := json.Unmarshal(line, &rec); err != nil {
			return bad(i, "not a record: %v", err)
		}
	}
	if rec.V != t.version {
		return bad(i, "unsupported record version %d", rec.V)
	}
	// Version 1 has no seal: the canonical form keeps the last record from
	// being changed without breaking anything. In version 2 the next
	// record's hash, or the seal, covers every byte.
	if t.version == 1 || rec.Type == SealType {
		if canon, err := encode(rec); err != nil || !bytes.Equal(canon, line) {
			return bad(i, "record is not in canonical form (edited?)")
		}
	}
	switch {
	case rec.Seq > i:
		return bad(i, "record %d is missing (found seq %d)", i, rec.Seq)
	case rec.Seq < i:
		return bad(i, "record out of order (found seq %d)", rec.Seq)
	}
	if rec.Prev != string(t.prev.bytes()) {
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
	switch {
	case t.sealed:
		return bad(i, "record after the seal")
	case rec.Type == SealType:
		if t.version == 1 || !t.ended {
			return bad(i, "seal before the session's end")
		}
		if t.keys != nil {
			if err := t.keys.verifySeal(rec.Session, rec.Seq, rec.Prev, rec.Data); err != nil {
				return bad(i, "%v", err)
			}
		}
		var d SealData
		_ = json.Unmarshal(rec.Data, &d) // checked above when there are keys
		t.sealed, t.keyID = true, d.Key
	case t.ended:
		return bad(i, "record after session end")
	}
	if rec.Type == protocols.SessionEnded {
		t.ended = true
	}
	t.next++
	t.prev.after(line)
	t.size += int64(len(line)) + 1
	t.last = rec.Time
	return rec, nil
}

// parseLine reads a record in the layout appendLine writes without
// reflection. It reports false for anything else (escaped strings, other
// layouts), which the caller then decodes with encoding/json.
func parseLine(line []byte) (Record, bool) {
	var r Record
	p := line
	field := func(name string) bool {
		if !bytes.HasPrefix(p, []byte(name)) {
			return false
		}
		p = p[len(name):]
		return true
	}
	number := func() (int64, bool) {
		i := 0
		for i < len(p) && '0' <= p[i] && p[i] <= '9' {
			i++
		}
		if i == 0 || i > 18 || (p[0] == '0' && i > 1) {
			return 0, false
		}
		n, err := strconv.ParseInt(string(p[:i]), 10, 64)
		p = p[i:]
		return n, err == nil
	}
	str := func() (string, bool) {
		i := bytes.IndexByte(p, '"')
		if i < 0 || bytes.IndexByte(p[:i], '\\') >= 0 {
			return "", false
		}
		s := string(p[:i])
		p = p[i:]
		return s, true
	}
	var ok bool
	if !field(`{"v":`) {
		return r, false
	}
	v, ok := number()
	if !ok || !field(`,"seq":`) {
		return r, false
	}
	r.V = int(v)
	if r.Seq, ok = number(); !ok || !field(`,"time":"`) {
		return r, false
	}
	ts, ok := str()
	if !ok || !field(`","session":"`) {
		return r, false
	}
	var err error
	if r.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return r, false
	}
	if r.Session, ok = str(); !ok || !field(`","type":"`) {
		return r, false
	}
	typ, ok := str()
	if !ok || !field(`","data":`) {
		return r, false
	}
	r.Type = protocols.EventType(typ)
	const prevField = `,"prev":"`
	if !bytes.HasSuffix(p, []byte(`"}`)) {
		return r, false
	}
	j := bytes.LastIndex(p, []byte(prevField))
	if j < 0 || j+len(prevField) > len(p)-2 {
		return r, false
	}
	prev := p[j+len(prevField) : len(p)-2]
	for _, c := range prev {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return r, false
		}
	}
	r.Data = json.RawMessage(p[:j])
	if len(r.Data) == 0 {
		return r, false
	}
	r.Prev = string(prev)
	return r, true
}

// Summary describes a recording.
type Summary struct {
	Session string
	Records int
	First   time.Time // time of the first record
	Last    time.Time // time of the last record
	Ended   bool      // a session.end was read
	Sealed  bool      // a seal was read
	Start   *protocols.SessionStart
	End     *protocols.SessionEnd
	Events  map[protocols.EventType]int // records by type
	Denies  []protocols.AuthzDeny
	// Identities made requests or calls in the session, in the order they
	// first did, at most store.MaxIdentities+1 (the connection's identity,
	// if it made them, and the most others an index row lists).
	Identities []string
}

// noteIdentity adds id to s.Identities.
func (s *Summary) noteIdentity(id string) {
	if id != "" && len(s.Identities) <= store.MaxIdentities && !slices.Contains(s.Identities, id) {
		s.Identities = append(s.Identities, id)
	}
}

// Summarize reads the recording at path and describes it. On a broken
// recording it returns the summary of the part before the break with Read's
// error.
func Summarize(path string) (Summary, error) {
	s := Summary{Events: map[protocols.EventType]int{}}
	err := Read(path, func(r Record) error {
		if s.Records == 0 {
			s.Session, s.First = r.Session, r.Time
		}
		s.Records++
		s.Last = r.Time
		s.Events[r.Type]++
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
		case protocols.AuthzDenied:
			var d protocols.AuthzDeny
			if json.Unmarshal(r.Data, &d) == nil {
				s.Denies = append(s.Denies, d)
			}
		case protocols.HTTPRequested:
			var d protocols.HTTPRequestEvent
			if json.Unmarshal(r.Data, &d) == nil {
				s.noteIdentity(d.Identity)
			}
		case protocols.GRPCCalled:
			var d protocols.GRPCCallEvent
			if json.Unmarshal(r.Data, &d) == nil {
				s.noteIdentity(d.Identity)
			}
		case SealType:
			s.Sealed = true
		}
		return nil
	})
	if s.Session == "" {
		s.Session, _ = ParseName(path)
	}
	return s, err
}

// File is one recording file in a directory.
type File struct {
	Session string
	Kind    Kind
	Path    string
}

// List returns the recordings in dir, sorted by session. A session with an
// open and a sealed file (a crash between sealing and renaming cannot make
// one; a copy can) is listed with both.
func List(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing recordings: %w", err)
	}
	var files []File
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if id, kind := ParseName(e.Name()); kind != NotRecording {
			files = append(files, File{Session: id, Kind: kind, Path: dir + string(os.PathSeparator) + e.Name()})
		}
	}
	slices.SortFunc(files, func(a, b File) int {
		if a.Session != b.Session {
			if a.Session < b.Session {
				return -1
			}
			return 1
		}
		return int(a.Kind) - int(b.Kind)
	})
	return files, nil
}

// Find returns the recording file of session id in dir: the sealed one, or
// the open one, or a version 1 one.
func Find(dir, id string) (File, error) {
	if !ValidSessionID(id) {
		return File{}, fmt.Errorf("finding recording: invalid session id %q", id)
	}
	for _, c := range []struct {
		path string
		kind Kind
	}{{Path(dir, id), Sealed}, {OpenPath(dir, id), Unsealed}, {filepath.Join(dir, id+OpenExtZst), Unsealed},
		{filepath.Join(dir, id+ExtV1), V1}} {
		if _, err := os.Stat(c.path); err == nil {
			return File{Session: id, Kind: c.kind, Path: c.path}, nil
		}
	}
	return File{}, fmt.Errorf("finding recording: no recording of session %s in %s", id, dir)
}
