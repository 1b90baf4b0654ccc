package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocols"
)

// DefaultFlushInterval is how often buffered records reach the file when
// Options.FlushInterval is zero.
const DefaultFlushInterval = 200 * time.Millisecond

// bufferSize is each open session's write buffer.
const bufferSize = 16 << 10

// Options configure a Log. The zero value is ready to use.
type Options struct {
	Logger        *slog.Logger  // default slog.Default()
	FlushInterval time.Duration // default DefaultFlushInterval
}

// Log records sessions to files under one directory. It implements
// protocols.Recorder and is safe for concurrent use.
type Log struct {
	dir     string
	logger  *slog.Logger
	dropped atomic.Uint64

	mu       sync.Mutex // guards sessions and closed
	sessions map[string]*session
	closed   bool

	stop chan struct{}
	done chan struct{}
}

// session is one open recording. Lock order: Log.mu may be taken while
// holding session.mu, never the other way round, except for a session that
// is not yet reachable from Log.sessions.
type session struct {
	mu        sync.Mutex
	id        string
	f         *os.File
	w         *bufio.Writer
	seq       int64
	prev      string
	dirty     bool   // records written since the last flush
	closed    bool   // nothing more may be written
	err       error  // why the session stopped recording early
	warnedErr bool   // a drop was logged for this session
	line      []byte // the buffer of the last record's line
}

var _ protocols.Recorder = (*Log)(nil)

// Open returns a Log writing recordings to dir, creating dir (mode 0700) if
// needed.
func Open(dir string, opts Options) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating recordings directory: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	l := &Log{
		dir:      dir,
		logger:   opts.Logger,
		sessions: make(map[string]*session),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go l.flushLoop(opts.FlushInterval)
	return l, nil
}

// Dir returns the directory of the recordings.
func (l *Log) Dir() string { return l.dir }

// Dropped returns how many events were not recorded: invalid session ids,
// events after a session's end or after Close, and write failures. Each drop
// is also logged.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Record appends e to its session's recording. A session.start creates the
// file; an event of a session without an open file opens it, continuing an
// existing recording that has not ended; a session.end writes the last
// record, syncs and closes the file. Record waits on the disk only when a
// session's buffer fills up, when a file is opened and at session end.
func (l *Log) Record(e protocols.Event) {
	if !ValidSessionID(e.Session) {
		l.drop(nil, e, errors.New("invalid session id"))
		return
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		l.drop(nil, e, fmt.Errorf("encoding event data: %w", err))
		return
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	s, fresh := l.session(e.Session)
	if s == nil {
		l.drop(nil, e, errClosed)
		return
	}
	defer s.mu.Unlock()
	if fresh {
		l.openFile(s, e.Type == protocols.SessionStarted)
	}
	if s.closed {
		if e.Type == protocols.SessionEnded {
			l.remove(s)
		}
		l.drop(s, e, s.err)
		return
	}
	line, err := appendLine(s.line[:0], Record{
		V:       Version,
		Seq:     s.seq,
		Time:    t.UTC(),
		Session: s.id,
		Type:    e.Type,
		Data:    data,
		Prev:    s.prev,
	})
	s.line = line
	if err != nil {
		l.drop(s, e, err)
		return
	}
	if _, err := s.w.Write(line); err != nil {
		l.fail(s, e, fmt.Errorf("writing record %d: %w", s.seq, err))
		return
	}
	if err := s.w.WriteByte('\n'); err != nil {
		l.fail(s, e, fmt.Errorf("writing record %d: %w", s.seq, err))
		return
	}
	s.seq++
	s.prev = hash(line)
	s.dirty = true
	if e.Type == protocols.SessionEnded {
		if err := l.finish(s, errEnded); err != nil {
			l.logger.Error("audit: closing recording", "session", s.id, "error", err)
		}
		l.remove(s)
	}
}

// session returns the session id, locked, and whether it was just added.
// It returns nil once the Log is closed.
func (l *Log) session(id string) (*session, bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, false
	}
	s := l.sessions[id]
	if s == nil {
		s = &session{id: id}
		s.mu.Lock() // not yet reachable by anyone else
		l.sessions[id] = s
		l.mu.Unlock()
		return s, true
	}
	l.mu.Unlock()
	s.mu.Lock()
	return s, false
}

// remove forgets s; the caller holds s.mu.
func (l *Log) remove(s *session) {
	l.mu.Lock()
	if l.sessions[s.id] == s {
		delete(l.sessions, s.id)
	}
	l.mu.Unlock()
}

// openFile opens s's recording: a new file if create, else the existing one
// if there is one to continue. On failure s is closed with the reason.
func (l *Log) openFile(s *session, create bool) {
	path := Path(l.dir, s.id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
	case create || !errors.Is(err, fs.ErrExist):
		s.closed, s.err = true, fmt.Errorf("creating recording: %w", err)
		return
	default:
		f, err = l.reopen(s, path)
		if err != nil {
			s.closed, s.err = true, err
			if errors.Is(err, errEnded) {
				l.remove(s) // a late event: do not keep the session around
			}
			return
		}
	}
	s.f = f
	s.w = bufio.NewWriterSize(f, bufferSize)
}

var (
	errEnded  = errors.New("recording already ended")
	errClosed = errors.New("recorder closed")
)

// reopen opens the existing recording at path for appending, after
// verifying it and setting s's chain to its end.
func (l *Log) reopen(s *session, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("reopening recording: %w", err)
	}
	t, err := readFrom(f, s.id, nil)
	if err == nil && t.ended {
		err = errEnded
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("continuing recording: %w", err)
	}
	s.seq, s.prev = t.next, t.prev
	return f, nil
}

// fail stops s after a write error.
func (l *Log) fail(s *session, e protocols.Event, err error) {
	s.closed, s.err = true, err
	if s.f != nil {
		s.f.Close()
	}
	if e.Type == protocols.SessionEnded {
		l.remove(s)
	}
	l.drop(s, e, err)
}

// drop counts and logs an event that was not recorded; for a session, only
// its first drop is logged.
func (l *Log) drop(s *session, e protocols.Event, reason error) {
	l.dropped.Add(1)
	if s != nil {
		if s.warnedErr {
			return
		}
		s.warnedErr = true
	}
	l.logger.Warn("audit: event not recorded", "session", e.Session, "type", string(e.Type), "error", reason)
}

// finish flushes, syncs and closes s, giving why as the reason for
// dropping later events; the caller holds s.mu.
func (l *Log) finish(s *session, why error) error {
	s.closed, s.err = true, why
	err := s.w.Flush()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("closing recording of %s: %w", s.id, err)
	}
	return nil
}

// syncDir makes the names of new files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (l *Log) flushLoop(every time.Duration) {
	defer close(l.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var open []*session
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		open = l.snapshot(open[:0])
		for _, s := range open {
			s.mu.Lock()
			if !s.closed && s.dirty {
				if err := s.w.Flush(); err != nil {
					l.logger.Error("audit: flushing recording", "session", s.id, "error", err)
					s.closed, s.err = true, fmt.Errorf("flushing recording: %w", err)
					s.f.Close()
				}
				s.dirty = false
			}
			s.mu.Unlock()
		}
		clear(open) // do not keep ended sessions alive until the next tick
	}
}

func (l *Log) snapshot(buf []*session) []*session {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sessions {
		buf = append(buf, s)
	}
	return buf
}

// Close flushes and closes every open recording. Sessions that have not
// ended stay unsealed: RecoverUnsealed closes them as truncated at the next
// start. Events recorded after Close are dropped.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	open := make([]*session, 0, len(l.sessions))
	for _, s := range l.sessions {
		open = append(open, s)
	}
	clear(l.sessions)
	l.mu.Unlock()

	close(l.stop)
	<-l.done

	var errs []error
	for _, s := range open {
		s.mu.Lock()
		if !s.closed {
			if err := l.finish(s, errClosed); err != nil {
				errs = append(errs, err)
			}
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}
