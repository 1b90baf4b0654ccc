package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// logBuffer collects a Log's log output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testKey is the audit key of every test recording; otherKey is one the
// verifiers do not trust.
var testKey, otherKey = mustKey(), mustKey()

func mustKey() *Key {
	k, err := NewKey()
	if err != nil {
		panic(err)
	}
	return k
}

// trusted trusts testKey.
func trusted(t testing.TB) Keys {
	ks := Keys{}
	if err := ks.Add(testKey.Public()); err != nil {
		t.Fatal(err)
	}
	return ks
}

func openLog(t *testing.T, dir string, opts Options) (*Log, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if opts.Key == nil {
		opts.Key = testKey
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 5 * time.Millisecond
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, logs
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)

// sessionEvents returns a whole session: start, n tcp.data events and end.
func sessionEvents(id string, n int) []protocols.Event {
	evs := []protocols.Event{{Session: id, Time: t0, Type: protocols.SessionStarted,
		Data: &protocols.SessionStart{Identity: "spiffe://postern.local/user/ann", Source: "127.0.0.1:40000",
			Service: "db", Protocol: protocols.Postgres, Agent: "db1", Transport: "quic"}}}
	var in, out int64
	for i := range n {
		d := protocols.TCPDataEvent{Direction: protocols.ClientToService, Bytes: int64(i + 1)}
		if i%2 == 1 {
			d.Direction = protocols.ServiceToClient
			out += d.Bytes
		} else {
			in += d.Bytes
		}
		evs = append(evs, protocols.Event{Session: id, Time: t0.Add(time.Duration(i+1) * time.Millisecond),
			Type: protocols.TCPData, Data: &d})
	}
	evs = append(evs, protocols.Event{Session: id, Time: t0.Add(time.Duration(n+1) * time.Millisecond),
		Type: protocols.SessionEnded,
		Data: &protocols.SessionEnd{Outcome: protocols.OutcomeOK, BytesIn: in, BytesOut: out, Duration: int64(n + 1)}})
	return evs
}

// validRecording writes a whole session of n data events and returns the
// path and the bytes of its recording.
func validRecording(t testing.TB, dir, id string, n int) (string, []byte) {
	t.Helper()
	l, err := Open(dir, Options{Key: testKey, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sessionEvents(id, n) {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := Path(dir, id)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func readAll(t *testing.T, path string) ([]Record, error) {
	t.Helper()
	var recs []Record
	err := Read(path, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	return recs, err
}

// decoded returns the lines (without newlines) of a version 2 recording's
// bytes, compressed (sealed) or not (open), as far as they decompress.
func decoded(t testing.TB, b []byte) [][]byte {
	t.Helper()
	if !bytes.HasPrefix(b, zstdMagic) {
		b, _, _ = bytes.Cut(b, []byte{0})
		return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	}
	d, err := newDecoder(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(d); err != nil {
		t.Fatalf("decompressing: %v", err)
	}
	return bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n"))
}

// compressed returns lines as a sealed recording's bytes, one zstd frame.
func compressed(ls [][]byte) []byte {
	var b bytes.Buffer
	e := archivers.get()
	defer archivers.put(e)
	e.Reset(&b)
	e.Write(plain(ls))
	e.Close()
	return b.Bytes()
}

// plain returns lines as an open recording's bytes.
func plain(ls [][]byte) []byte {
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

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// hash returns the prev value of the record after line, computed apart
// from the writer's chainHash.
func hash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// openRecording waits until the open recording of session id is made (off
// the data path) and returns it.
func openRecording(t *testing.T, l *Log, id string) *mapped {
	t.Helper()
	l.mu.Lock()
	s := l.sessions[id]
	l.mu.Unlock()
	if s == nil {
		t.Fatalf("session %s is not open", id)
	}
	s.mu.Lock()
	created := s.created
	s.mu.Unlock()
	if created != nil {
		<-created
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w
}
