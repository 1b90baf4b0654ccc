package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// Defaults of Options.
const (
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMaxBuffer     = 8 << 20
)

// chunkSize is how many bytes of tcp.data records make a write without
// waiting for the flush interval.
const chunkSize = 64 << 10

// Index receives the sessions' index rows; store.Store is one.
type Index interface {
	IndexSessions(ctx context.Context, ss []store.Session) error
}

// Options configure a Log.
type Options struct {
	Key           *Key          // seals recordings; required
	Logger        *slog.Logger  // default slog.Default()
	FlushInterval time.Duration // tcp.data and other batched records; default DefaultFlushInterval
	// MaxBuffer bounds the bytes of one session's records waiting for the
	// disk; default DefaultMaxBuffer. Past it the session's events cannot
	// be recorded: the session is closed through OnFail, or with FailOpen
	// its events are dropped (and counted) until the disk catches up.
	MaxBuffer int
	FailOpen  bool
	// OnFail is called (not under any lock) once for a session whose
	// events cannot be recorded, unless FailOpen; the gateway closes the
	// session.
	OnFail func(session string, err error)
	// Index, if set, receives each session's row when it starts and when
	// its recording is sealed, in batches, off the data path.
	Index Index
	// Bucket, if set, receives a copy of each sealed recording, off the
	// data path (see Upload).
	Bucket *blob.Bucket
}

// Log records sessions to files under one directory. It implements
// protocols.Recorder and is safe for concurrent use.
//
// Records are written as they are recorded: the goroutine that records an
// event writes it (and whatever else of its session is waiting) into the
// session's open recording (see mapped), unless another goroutine is
// writing that session already, in which case that one writes it before it
// stops; the first writer of a session is the goroutine that creates its
// file (see create). tcp.data records wait for the flush interval or a full
// chunk. So
// an event is in the file (in the page cache, which survives a crash of the
// gateway) before the protocol handler that recorded it answers the client,
// and a slow disk holds up only the goroutine writing, while the others
// buffer. Compression waits for the seal: the sealed recording is
// compressed into its final file in the background.
type Log struct {
	dir     string
	opts    Options
	logger  *slog.Logger
	dropped atomic.Uint64
	failed  atomic.Uint64
	pending atomic.Int64 // bytes buffered, every session

	uploadFailed atomic.Uint64

	mu       sync.Mutex // guards sessions and closed
	sessions map[string]*session
	closed   bool

	index  chan store.Session
	prep   *preparer
	spares *spares
	stop   chan struct{}
	done   sync.WaitGroup
}

// session is one open recording. Lock order: Log.mu may be taken while
// holding session.mu, never the other way round, except for a session that
// is not yet reachable from Log.sessions.
type session struct {
	mu      sync.Mutex
	id      string
	w       *mapped       // the open recording; written by the writer only
	created chan struct{} // closed once the open recording is made and written, nil after
	seq     int64
	prev    chainHash
	pending []byte // encoded lines not yet written
	spare   []byte // the other buffer, for the next batch
	writing bool   // a goroutine is writing; it writes pending before it stops
	ending  bool   // session.end and the seal are in pending: the writer closes the file
	closed  bool   // nothing more may be recorded
	over    bool   // over MaxBuffer
	err     error  // why the session stopped recording early
	warned  bool   // a drop was logged for this session
	line    []byte // the buffer of the last record's line
	row     store.Session
	indexed time.Time // when row was last queued for the index
	queued  int64     // its Events then
}

var _ protocols.Recorder = (*Log)(nil)

// Open returns a Log writing recordings to dir, creating dir (mode 0700) if
// needed.
func Open(dir string, opts Options) (*Log, error) {
	if opts.Key == nil {
		return nil, errors.New("opening recordings: no audit key")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating recordings directory: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.MaxBuffer <= 0 {
		opts.MaxBuffer = DefaultMaxBuffer
	}
	l := &Log{
		dir:      dir,
		opts:     opts,
		logger:   opts.Logger,
		sessions: make(map[string]*session),
		spares:   &spares{dir: dir},
		stop:     make(chan struct{}),
	}
	l.done.Add(2)
	go l.flushLoop(opts.FlushInterval)
	l.prep = newPreparer()
	go func() {
		defer l.done.Done()
		l.prep.run(l.stop)
	}()
	if opts.Index != nil {
		l.index = make(chan store.Session, 4096)
		l.done.Add(1)
		go l.indexLoop()
	}
	return l, nil
}

// Dir returns the directory of the recordings.
func (l *Log) Dir() string { return l.dir }

// Dropped returns how many events were not recorded: invalid session ids,
// events after a session's end or after Close, over a full buffer, and
// write failures. Each drop is also logged, once per session.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Failed returns how many sessions stopped recording before their end.
func (l *Log) Failed() uint64 { return l.failed.Load() }

// UploadFailed returns how many sealed recordings could not be copied to
// the bucket.
func (l *Log) UploadFailed() uint64 { return l.uploadFailed.Load() }

// Buffered returns how many bytes of records wait for the disk.
func (l *Log) Buffered() int64 { return l.pending.Load() }

// Record appends e to its session's recording. The first event of a
// session has its file created (off the data path: see create); a
// session.end writes the last record and the seal, and has the recording
// compressed into its sealed file.
func (l *Log) Record(e protocols.Event) {
	if !ValidSessionID(e.Session) {
		l.drop(nil, e, errors.New("invalid session id"))
		return
	}
	buf := dataBuffers.Get().(*[]byte)
	data, err := encodeData((*buf)[:0], e.Data)
	defer func() {
		if cap(data) <= 64<<10 { // a large one is left to the collector
			*buf = data[:0]
			dataBuffers.Put(buf)
		}
	}()
	if err != nil {
		l.drop(nil, e, fmt.Errorf("encoding event data: %w", err))
		return
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	t = t.UTC()
	s, fresh := l.session(e.Session)
	if s == nil {
		l.drop(nil, e, errClosed)
		return
	}
	if fresh {
		l.create(s)
	} else if s.created != nil && e.Type != protocols.TCPData && e.Type != protocols.SessionEnded {
		// An event a client may see answered is in the file first.
		created := s.created
		s.mu.Unlock()
		<-created
		s.mu.Lock()
	}
	end := e.Type == protocols.SessionEnded
	if s.closed || (s.over && !end) {
		err := s.err
		if end && !s.writing && s.w == nil {
			l.remove(s)
		}
		s.mu.Unlock()
		l.drop(s, e, err)
		return
	}
	if len(s.pending) > l.opts.MaxBuffer && !end {
		l.overflow(s, e) // unlocks
		return
	}
	before := len(s.pending)
	if err := s.append(Record{V: Version, Seq: s.seq, Time: t, Session: s.id, Type: e.Type, Data: data}); err != nil {
		s.mu.Unlock()
		l.drop(s, e, err)
		return
	}
	s.index(e)
	if end {
		s.ending, s.closed = true, true
		s.err = errEnded
		if err := s.append(Record{V: Version, Seq: s.seq, Time: t, Session: s.id, Type: SealType,
			Data: l.opts.Key.seal(s.id, s.seq, s.prev.String())}); err != nil {
			l.logger.Error("audit: sealing recording", "session", s.id, "error", err)
		}
		l.indexRow(s.row)
	} else if fresh {
		s.indexed, s.queued = time.Now(), s.row.Events
		l.indexRow(s.row)
	}
	l.pending.Add(int64(len(s.pending) - before))
	if s.writing || (e.Type == protocols.TCPData && len(s.pending) < chunkSize) {
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	l.write(s)
}

// dataBuffers hold events' data while they are recorded.
var dataBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// encodeData appends the JSON of an event's data to b: by the data's own
// AppendJSON where it has one (the events of the data path), which writes
// what json.Marshal does, without reflection.
func encodeData(b []byte, v any) ([]byte, error) {
	if a, ok := v.(interface{ AppendJSON([]byte) ([]byte, bool) }); ok {
		if out, ok := a.AppendJSON(b); ok {
			return out, nil
		}
	}
	m, err := json.Marshal(v)
	return append(b, m...), err
}

// append encodes r as the next record of s into its pending buffer; the
// caller holds s.mu.
func (s *session) append(r Record) error {
	line, err := appendLine(s.line[:0], r, s.prev.bytes())
	s.line = line
	if err != nil {
		return err
	}
	s.pending = append(append(s.pending, line...), '\n')
	s.seq++
	s.prev.after(line)
	return nil
}

// index updates s's index row from e; the caller holds s.mu.
func (s *session) index(e protocols.Event) {
	s.row.Events = s.seq
	switch d := e.Data.(type) {
	case *protocols.SessionStart:
		s.row.Identity, s.row.Source, s.row.Service = d.Identity, d.Source, d.Service
		s.row.Protocol, s.row.Agent, s.row.Transport = d.Protocol, d.Agent, d.Transport
		s.row.Database, s.row.DBUser = d.Database, d.User
		s.row.Start = e.Time.UTC()
	case *protocols.SessionEnd:
		s.row.End = e.Time.UTC()
		s.row.BytesIn, s.row.BytesOut, s.row.Outcome = d.BytesIn, d.BytesOut, d.Outcome
		s.row.Status = StatusSealed
		s.row.Events = s.seq + 1 // with the seal
	case *protocols.AuthzDeny:
		s.row.Denies++
	case *protocols.HTTPRequestEvent:
		s.row.AddIdentity(d.Identity)
	case *protocols.GRPCCallEvent:
		s.row.AddIdentity(d.Identity)
	}
	if s.row.Start.IsZero() {
		s.row.Start = e.Time.UTC()
	}
}

// Index statuses of a recording.
const (
	StatusOpen   = "open"
	StatusSealed = "sealed"
)

// overflow handles an event of a session whose buffer is over MaxBuffer;
// the caller holds s.mu, which overflow releases. The event is not
// recorded. Unless FailOpen, the session is marked so that nothing but its
// end is recorded any more, and OnFail is asked to close it.
func (l *Log) overflow(s *session, e protocols.Event) {
	err := fmt.Errorf("recording buffer full (%d bytes waiting for the disk)", len(s.pending))
	first := !s.over && !l.opts.FailOpen
	if first {
		s.over, s.err = true, err
	}
	s.mu.Unlock()
	l.drop(s, e, err)
	if first {
		l.failed.Add(1)
		l.logger.Error("audit: session cannot be recorded; closing it", "session", s.id, "error", err)
		if l.opts.OnFail != nil {
			l.opts.OnFail(s.id, err)
		}
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
		s = &session{id: id, row: store.Session{ID: id, Status: StatusOpen}}
		s.mu.Lock() // not yet reachable by anyone else
		l.sessions[id] = s
		l.mu.Unlock()
		return s, true
	}
	l.mu.Unlock()
	s.mu.Lock()
	return s, false
}

// remove forgets s.
func (l *Log) remove(s *session) {
	l.mu.Lock()
	if l.sessions[s.id] == s {
		delete(l.sessions, s.id)
	}
	l.mu.Unlock()
}

// create has s's open recording made, off the data path: a file
// created costs tens of microseconds, more where inodes were freed in the
// last minutes (docs/BENCHMARKS.md), and nothing the client waits for
// needs it yet. The caller holds s.mu. The session's writer is the
// goroutine that makes the file, and it writes what was recorded in the
// meantime; Record waits for the file before it records an event that a
// client may see answered. A session whose sealed recording exists
// already is not recorded again.
func (l *Log) create(s *session) {
	if _, err := os.Stat(Path(l.dir, s.id)); err == nil {
		s.closed, s.err = true, errEnded
		return
	}
	created := make(chan struct{})
	s.created, s.writing = created, true
	go func() {
		w, err := createMapped(OpenPath(l.dir, s.id), l.prep)
		s.mu.Lock()
		s.w = w
		if err != nil && s.err != errEnded {
			s.closed, s.err = true, err
		}
		s.mu.Unlock()
		if err != nil {
			l.writeFailed(s, err)
		} else {
			l.write(s)
		}
		s.mu.Lock()
		s.created = nil
		s.mu.Unlock()
		close(created)
	}()
}

var (
	errEnded  = errors.New("recording already ended")
	errClosed = errors.New("recorder closed")
)

// write writes s's pending records until none are left, then, if the
// session has ended, closes the recording. The caller has set s.writing;
// write clears it.
func (l *Log) write(s *session) {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 || s.w == nil {
			n := len(s.pending)
			s.pending = s.pending[:0]
			l.pending.Add(-int64(n))
			ending := s.ending && s.w != nil
			if ending {
				s.ending = false
			} else {
				s.writing = false
			}
			w := s.w
			if ending || (s.closed && w == nil) {
				s.w = nil
			}
			s.mu.Unlock()
			if ending {
				// Still the writer, so that a Close that found the
				// session waits until its sealed file is handed on.
				err := l.seal(w)
				if err != nil {
					l.logger.Error("audit: closing recording", "session", s.id, "error", err)
				} else {
					l.afterSeal(s.id)
				}
				l.remove(s)
				s.mu.Lock()
				s.writing = false
				s.mu.Unlock()
			}
			return
		}
		batch := s.pending
		s.pending, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		l.pending.Add(-int64(len(batch)))

		err := s.w.write(batch)

		s.mu.Lock()
		s.spare = batch[:0]
		s.mu.Unlock()
		if err != nil {
			l.writeFailed(s, err)
			return
		}
	}
}

// writeFailed stops recording s after a write error; the caller is its
// writer.
func (l *Log) writeFailed(s *session, err error) {
	l.failed.Add(1)
	l.logger.Error("audit: writing recording", "session", s.id, "error", err)
	if !l.opts.FailOpen && l.opts.OnFail != nil {
		l.opts.OnFail(s.id, err)
	}
	s.mu.Lock()
	if s.err != errEnded {
		s.closed, s.err = true, err
	}
	l.pending.Add(-int64(len(s.pending)))
	s.pending = s.pending[:0]
	if s.w != nil {
		s.w.close(false) //nolint:errcheck // the write error is the one to report
	}
	s.w, s.writing, s.ending = nil, false, false
	s.mu.Unlock()
	l.remove(s)
}

// seal closes a sealed recording. It keeps its open name until afterSeal
// has compressed it into its sealed file, which is synced; a crash of the
// machine before that leaves what the kernel had written of the open one
// for RecoverUnsealed.
func (l *Log) seal(w *mapped) error {
	if err := w.close(false); err != nil {
		return fmt.Errorf("sealing recording: %w", err)
	}
	return nil
}

// compressing bounds the recordings compressed at a time to the encoders
// kept (archivers): when many sessions end at once, the others wait their
// turn instead of each making an encoder (its tables and history: ~200 KB
// for a short recording, over 1 MiB for a long one; TestManyEndsShareEncoders).
var compressing = make(chan struct{}, cap(archivers.free))

// afterSeal compresses the sealed recording of id into its sealed file and
// uploads that to the bucket (if there is one), in the background; Close
// waits for both.
func (l *Log) afterSeal(id string) {
	finish := func() {
		compressing <- struct{}{}
		err := compressSealed(l.dir, id, l.spares)
		<-compressing
		if err != nil {
			l.logger.Error("audit: compressing sealed recording (retried at the next start)", "session", id, "error", err)
			return
		}
		if l.opts.Bucket != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := Upload(ctx, l.opts.Bucket, l.dir, id); err != nil {
				l.uploadFailed.Add(1)
				l.logger.Error("audit: uploading recording (retried at the next start)", "session", id, "error", err)
			}
		}
	}
	l.mu.Lock()
	if l.closed { // Close waits for this session's writer, the caller
		l.mu.Unlock()
		finish()
		return
	}
	l.done.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.done.Done()
		finish()
	}()
}

// drop counts and logs an event that was not recorded; for a session, only
// its first drop is logged.
func (l *Log) drop(s *session, e protocols.Event, reason error) {
	l.dropped.Add(1)
	if s != nil {
		s.mu.Lock()
		warned := s.warned
		s.warned = true
		s.mu.Unlock()
		if warned {
			return
		}
	}
	l.logger.Warn("audit: event not recorded", "session", e.Session, "type", string(e.Type), "error", reason)
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
	defer l.done.Done()
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
		now := time.Now()
		for _, s := range open {
			s.mu.Lock()
			// The index row of a live session follows its records, every
			// few seconds; queued under the lock so that it cannot
			// overtake the row of the session's end.
			if !s.closed && s.row.Events != s.queued && now.Sub(s.indexed) >= liveIndexInterval {
				s.indexed, s.queued = now, s.row.Events
				l.indexRow(s.row)
			}
			if s.writing || len(s.pending) == 0 {
				s.mu.Unlock()
				continue
			}
			s.writing = true
			s.mu.Unlock()
			l.write(s)
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

// liveIndexInterval is how often at most the index row of an open session
// is brought up to date with its records; shorter in tests.
var liveIndexInterval = 5 * time.Second

// indexRow queues row for the index.
func (l *Log) indexRow(row store.Session) {
	if l.index == nil {
		return
	}
	select {
	case l.index <- row:
	default:
		l.logger.Warn("audit: index queue full; session left out of the index until the next reindex", "session", row.ID)
	}
}

// indexLinger is how long the index waits for more rows after one comes,
// so that they share a transaction.
const indexLinger = 50 * time.Millisecond

// lastRows keeps, of the rows of each session in rows, the last one, in
// place of the first.
func lastRows(rows []store.Session) []store.Session {
	at := make(map[string]int, len(rows))
	out := rows[:0]
	for _, r := range rows {
		if i, ok := at[r.ID]; ok {
			out[i] = r
			continue
		}
		at[r.ID] = len(out)
		out = append(out, r)
	}
	return out
}

func (l *Log) indexLoop() {
	defer l.done.Done()
	var batch []store.Session
	flush := func() {
		if len(batch) == 0 {
			return
		}
		batch = lastRows(batch)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.opts.Index.IndexSessions(ctx, batch); err != nil {
			l.logger.Error("audit: indexing sessions", "count", len(batch), "error", err)
		}
		cancel()
		batch = batch[:0]
	}
	// closing writes, in one batch, the rows queued when the log closes.
	closing := func() {
		for {
			select {
			case row := <-l.index:
				batch = append(batch, row)
			default:
				flush()
				return
			}
		}
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case row := <-l.index:
			// Rows that come within indexLinger share a transaction, and a
			// session's rows in it are written once, its last (a short
			// session's start and end, say); so do the rows left at Close.
			batch = append(batch, row)
			linger.Reset(indexLinger)
		collect:
			for len(batch) < 512 {
				select {
				case row := <-l.index:
					batch = append(batch, row)
				case <-linger.C:
					break collect
				case <-l.stop:
					linger.Stop()
					closing()
					return
				}
			}
			linger.Stop()
			flush()
		case <-l.stop:
			closing()
			return
		}
	}
}

// Close writes what is buffered and closes every open recording. Sessions
// that have not ended stay unsealed: RecoverUnsealed closes them as
// truncated at the next start. Events recorded after Close are dropped.
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

	var errs []error
	for _, s := range open {
		for { // wait for a writer in progress
			s.mu.Lock()
			if !s.writing {
				break
			}
			s.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		s.writing = true
		s.mu.Unlock()
		l.write(s)
		s.mu.Lock()
		if s.w != nil {
			if err := s.w.close(true); err != nil {
				errs = append(errs, fmt.Errorf("closing recording of %s: %w", s.id, err))
			}
			s.w = nil
		}
		s.closed, s.err = true, errClosed
		s.mu.Unlock()
	}
	close(l.stop)
	l.done.Wait()
	l.spares.removeAll()
	return errors.Join(errs...)
}
