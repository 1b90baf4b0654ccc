package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

//go:embed static
var static embed.FS

// Limits of the API.
const (
	DefaultLimit      = 100  // sessions a page, when limit is not given
	MaxLimit          = 1000 // sessions a page at most
	MaxOffset         = 1_000_000
	DefaultEventLimit = 500  // events a page, when limit is not given
	MaxEventLimit     = 5000 // events a page at most
	// maxEventBytes bounds the event data of one page; a page holds at
	// least one event whatever its size.
	maxEventBytes = 8 << 20
	// summaryMaxSize is the largest recording file that a session's
	// details summarize (reading it whole); the player pages through
	// bigger ones without a summary.
	summaryMaxSize = 64 << 20
)

// OutcomeOpen, as the outcome filter, lists the sessions still being
// recorded (as `postern audit list --outcome open` does).
const OutcomeOpen = "open"

// ContentSecurityPolicy is sent with every response: the page runs only its
// own script and style files, talks only to its own origin, and cannot be
// framed.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type server struct {
	a      *audit.Archive
	verify chan struct{} // bounds concurrent whole-recording reads of /verify
	index  []byte
}

// Handler serves the auditors' page and its JSON API over a.
func Handler(a *audit.Archive) http.Handler {
	page, err := static.ReadFile("static/index.html")
	if err != nil {
		panic("ui: index.html is not embedded: " + err.Error())
	}
	s := &server{a: a, verify: make(chan struct{}, max(2, runtime.GOMAXPROCS(0))), index: page}
	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.Handle("GET /static/", http.StripPrefix("/static/", noDirs(http.FileServerFS(files))))
	mux.HandleFunc("GET /api/sessions", s.sessions)
	mux.HandleFunc("GET /api/sessions/{id}", s.session)
	mux.HandleFunc("GET /api/sessions/{id}/events", s.events)
	mux.HandleFunc("GET /api/sessions/{id}/verify", s.verifyOne)
	for _, p := range []string{"/api/sessions", "/api/sessions/{id}", "/api/sessions/{id}/events", "/api/sessions/{id}/verify"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			fail(w, http.StatusMethodNotAllowed, "method %s not allowed; the API is read-only", r.Method)
		})
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "no such API endpoint: %s", r.URL.Path)
	})
	return secure(mux)
}

// secure sets the headers every response carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		if strings.HasPrefix(r.URL.Path, "/api/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// noDirs refuses directory listings of the static files.
func noDirs(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// LocalOnly passes on only requests addressed to localhost or a loopback
// address. A page without a login served on loopback is otherwise readable
// by any web site that points a name of its own at 127.0.0.1 (DNS
// rebinding); such requests carry that name in their Host header.
func LocalOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hn, _, err := net.SplitHostPort(host); err == nil {
			host = hn
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			fail(w, http.StatusForbidden, "host %q refused: this page answers only to localhost and loopback addresses", r.Host)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.index)
}

// sessionJSON is a session's index row in the API.
type sessionJSON struct {
	ID         string     `json:"id"`
	Identity   string     `json:"identity"`
	Identities []string   `json:"identities,omitempty"` // others that made requests or calls
	Source     string     `json:"source"`
	Service    string     `json:"service"`
	Protocol   string     `json:"protocol"`
	Agent      string     `json:"agent"`
	Transport  string     `json:"transport"`
	Database   string     `json:"database,omitempty"`
	DBUser     string     `json:"db_user,omitempty"`
	Start      *time.Time `json:"start,omitempty"`
	End        *time.Time `json:"end,omitempty"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	BytesIn    int64      `json:"bytes_in"`
	BytesOut   int64      `json:"bytes_out"`
	Outcome    string     `json:"outcome"`
	Events     int64      `json:"events"`
	Denies     int64      `json:"denies"`
	Status     string     `json:"status"`
}

func sessionOf(s store.Session) sessionJSON {
	j := sessionJSON{
		ID: s.ID, Identity: s.Identity, Identities: s.Identities, Source: s.Source, Service: s.Service, Protocol: s.Protocol,
		Agent: s.Agent, Transport: s.Transport, Database: s.Database, DBUser: s.DBUser,
		BytesIn: s.BytesIn, BytesOut: s.BytesOut, Outcome: s.Outcome, Events: s.Events, Denies: s.Denies,
		Status: s.Status,
	}
	if !s.Start.IsZero() {
		t := s.Start.UTC()
		j.Start = &t
	}
	if !s.End.IsZero() {
		t := s.End.UTC()
		j.End = &t
		if j.Start != nil {
			d := t.Sub(*j.Start).Milliseconds()
			j.DurationMS = &d
		}
	}
	return j
}

type listJSON struct {
	Sessions []sessionJSON `json:"sessions"`
	Offset   int           `json:"offset"`
	Limit    int           `json:"limit"`
	More     bool          `json:"more"` // sessions follow this page
}

// sessions lists the sessions that match the query, newest first, a page
// at a time.
func (s *server) sessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f store.SessionFilter
	for _, p := range []struct {
		name string
		dst  *string
	}{{"identity", &f.Identity}, {"service", &f.Service}, {"outcome", &f.Outcome}, {"protocol", &f.Protocol}} {
		v := strings.TrimSpace(q.Get(p.name))
		if len(v) > 1024 {
			fail(w, http.StatusBadRequest, "%s: longer than 1024 bytes", p.name)
			return
		}
		*p.dst = v
	}
	var err error
	if f.Since, err = parseTime(q.Get("since")); err != nil {
		fail(w, http.StatusBadRequest, "since: %v", err)
		return
	}
	if f.Until, err = parseTime(q.Get("until")); err != nil {
		fail(w, http.StatusBadRequest, "until: %v", err)
		return
	}
	limit, err := intParam(q.Get("limit"), DefaultLimit, 1, MaxLimit)
	if err != nil {
		fail(w, http.StatusBadRequest, "limit: %v", err)
		return
	}
	offset, err := intParam(q.Get("offset"), 0, 0, MaxOffset)
	if err != nil {
		fail(w, http.StatusBadRequest, "offset: %v", err)
		return
	}
	// The index has no offset: read up to the end of the page, and one
	// more to tell whether another page follows.
	f.Limit = offset + limit + 1
	if f.Outcome == OutcomeOpen {
		// Not an outcome in the index, where an open session has none.
		f.Outcome, f.Status = "", audit.StatusOpen
	}
	ss, err := s.a.Sessions(r.Context(), f)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	out := listJSON{Sessions: []sessionJSON{}, Offset: offset, Limit: limit}
	if len(ss) > offset {
		ss = ss[offset:]
		if len(ss) > limit {
			ss, out.More = ss[:limit], true
		}
		for _, row := range ss {
			out.Sessions = append(out.Sessions, sessionOf(row))
		}
	}
	reply(w, out)
}

type detailJSON struct {
	Session   sessionJSON    `json:"session"`
	Recording *recordingJSON `json:"recording,omitempty"`
	Summary   *summaryJSON   `json:"summary,omitempty"`
	// SummaryError says why there is no summary, or why it stops short.
	SummaryError string `json:"summary_error,omitempty"`
}

type recordingJSON struct {
	Kind string `json:"kind"` // sealed, open (unsealed) or v1
	Size int64  `json:"size"` // bytes of the file
}

type summaryJSON struct {
	Records int                     `json:"records"`
	First   *time.Time              `json:"first,omitempty"`
	Last    *time.Time              `json:"last,omitempty"`
	Ended   bool                    `json:"ended"`
	Sealed  bool                    `json:"sealed"`
	Start   *protocols.SessionStart `json:"start,omitempty"`
	End     *protocols.SessionEnd   `json:"end,omitempty"`
	Events  map[string]int          `json:"events"` // records by type
	Denies  []protocols.AuthzDeny   `json:"denies"`
}

func kindName(k audit.Kind) string {
	switch k {
	case audit.Sealed:
		return "sealed"
	case audit.Unsealed:
		return "open"
	case audit.V1:
		return "v1"
	}
	return "unknown"
}

// session returns a session's index row, what its file is, and a summary
// of its recording when that is small enough to read whole.
func (s *server) session(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	file, err := audit.Find(s.a.Dir, id)
	if err != nil {
		if row, ok := s.indexed(ctx, id); ok {
			reply(w, detailJSON{Session: sessionOf(row), SummaryError: missing})
			return
		}
		fail(w, http.StatusNotFound, "no recording of session %s", id)
		return
	}
	row, file, err := s.a.Session(ctx, id)
	if err != nil && row.ID == "" {
		if isNotExist(err) {
			fail(w, http.StatusNotFound, "no recording of session %s", id)
		} else {
			fail(w, http.StatusInternalServerError, "%v", err)
		}
		return
	}
	out := detailJSON{Session: sessionOf(row), Recording: &recordingJSON{Kind: kindName(file.Kind), Size: fileSize(file.Path)}}
	if err != nil {
		out.SummaryError = err.Error()
	}
	if out.Recording.Size > summaryMaxSize {
		if out.SummaryError == "" {
			out.SummaryError = "recording too large to summarize here; the player pages through its events"
		}
		reply(w, out)
		return
	}
	sum, err := audit.Summarize(file.Path)
	if err != nil && out.SummaryError == "" {
		out.SummaryError = err.Error()
	}
	js := &summaryJSON{Records: sum.Records, Ended: sum.Ended, Sealed: sum.Sealed, Start: sum.Start, End: sum.End,
		Events: map[string]int{}, Denies: sum.Denies}
	if !sum.First.IsZero() {
		t1, t2 := sum.First.UTC(), sum.Last.UTC()
		js.First, js.Last = &t1, &t2
	}
	for t, n := range sum.Events {
		js.Events[string(t)] = n
	}
	if js.Denies == nil {
		js.Denies = []protocols.AuthzDeny{}
	}
	out.Summary = js
	reply(w, out)
}

// missing is what the API says of a session that the index lists but that
// has no recording.
const missing = "the index lists this session but its recording is missing (removed?)"

// indexed returns the index row of id, if the archive has an index that
// knows it.
func (s *server) indexed(ctx context.Context, id string) (store.Session, bool) {
	if s.a.Index == nil {
		return store.Session{}, false
	}
	row, err := s.a.Index.Session(ctx, id)
	return row, err == nil
}

type eventJSON struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	OffsetMS float64         `json:"offset_ms"` // since the recording's first record
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	// Invalid marks a record whose data is not JSON (a damaged record,
	// which the chain check names at the same time).
	Invalid bool `json:"invalid,omitempty"`
}

type eventsJSON struct {
	Session string      `json:"session"`
	From    int64       `json:"from"`
	Events  []eventJSON `json:"events"`
	// Next is the seq of the next page, null at the end of the recording.
	Next *int64 `json:"next"`
	// Broken is set when reading stopped at a record that fails
	// verification; the events from its seq on cannot be trusted.
	Broken *brokenJSON `json:"broken,omitempty"`
}

type brokenJSON struct {
	Seq    int    `json:"seq"`
	Reason string `json:"reason"`
}

var errPageFull = errors.New("page full")

// events streams a page of a session's records from its recording.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	from, err := intParam(q.Get("from"), 0, 0, math.MaxInt)
	if err != nil {
		fail(w, http.StatusBadRequest, "from: %v", err)
		return
	}
	limit, err := intParam(q.Get("limit"), DefaultEventLimit, 1, MaxEventLimit)
	if err != nil {
		fail(w, http.StatusBadRequest, "limit: %v", err)
		return
	}
	ctx := r.Context()
	var out eventsJSON
	// A recording is renamed once when it is sealed: look it up again if
	// it went away between Find and Read.
	for try := 0; ; try++ {
		file, err := audit.Find(s.a.Dir, id)
		if err != nil {
			fail(w, http.StatusNotFound, "no recording of session %s", id)
			return
		}
		out = eventsJSON{Session: id, From: int64(from), Events: []eventJSON{}}
		var (
			first time.Time
			size  int
			n     int
		)
		err = audit.Read(file.Path, func(rec audit.Record) error {
			if n++; n&1023 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if rec.Seq == 0 {
				first = rec.Time
			}
			if rec.Seq < int64(from) {
				return nil
			}
			if len(out.Events) == limit || size > maxEventBytes {
				next := rec.Seq
				out.Next = &next
				return errPageFull
			}
			e := eventJSON{Seq: rec.Seq, Time: rec.Time.UTC(), Type: string(rec.Type), Data: rec.Data}
			if !first.IsZero() {
				e.OffsetMS = math.Round(float64(rec.Time.Sub(first))/1e3) / 1e3
			}
			if !json.Valid(e.Data) {
				e.Data, e.Invalid = json.RawMessage("null"), true
			}
			size += len(e.Data)
			out.Events = append(out.Events, e)
			return nil
		})
		var ce *audit.ChainError
		switch {
		case err == nil, errors.Is(err, errPageFull):
		case ctx.Err() != nil:
			return // the client went away
		case isNotExist(err) && try == 0:
			continue
		case isNotExist(err):
			fail(w, http.StatusNotFound, "no recording of session %s", id)
			return
		case errors.As(err, &ce):
			out.Broken = &brokenJSON{Seq: ce.Seq, Reason: ce.Reason}
		default:
			out.Broken = &brokenJSON{Seq: int(from) + len(out.Events), Reason: err.Error()}
		}
		reply(w, out)
		return
	}
}

type verifyJSON struct {
	Status   string `json:"status"` // ok, open or fail
	Kind     string `json:"kind,omitempty"`
	Records  int    `json:"records"`
	Sealed   bool   `json:"sealed"`
	Ended    bool   `json:"ended"`
	Key      string `json:"key,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Error    string `json:"error,omitempty"`
	Seq      *int   `json:"seq,omitempty"`      // the first record that fails
	Unsealed bool   `json:"unsealed,omitempty"` // failed only for lack of a seal
	Missing  bool   `json:"missing,omitempty"`  // indexed, but no recording
}

// verifyOne verifies a session's recording whole: chain and seal.
func (s *server) verifyOne(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if s.a.Keys == nil {
		fail(w, http.StatusServiceUnavailable, "no audit public key to verify seals with (postern audit ui --key FILE)")
		return
	}
	select {
	case s.verify <- struct{}{}:
		defer func() { <-s.verify }()
	case <-ctx.Done():
		return
	}
	var (
		res audit.Result
		err error
	)
	for try := 0; try < 2; try++ {
		if _, ferr := audit.Find(s.a.Dir, id); ferr != nil {
			if _, ok := s.indexed(ctx, id); ok {
				reply(w, verifyJSON{Status: "fail", Error: missing, Missing: true})
				return
			}
			fail(w, http.StatusNotFound, "no recording of session %s", id)
			return
		}
		res, err = s.a.Verify(ctx, id)
		if !isNotExist(err) {
			break
		}
	}
	out := verifyJSON{Status: "ok", Kind: kindName(res.Kind), Records: res.Records, Sealed: res.Sealed,
		Ended: res.Ended, Key: res.KeyID, Size: res.Size}
	if res.Open {
		out.Status = "open"
	}
	if err != nil {
		out.Status, out.Error = "fail", err.Error()
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			seq := ce.Seq
			out.Seq = &seq
		}
		out.Unsealed = errors.Is(err, audit.ErrUnsealed)
	}
	reply(w, out)
}

// pathID returns the {id} of the request's path, or answers 400.
func pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !audit.ValidSessionID(id) {
		fail(w, http.StatusBadRequest, "invalid session id %q: want 1 to 128 of A-Z a-z 0-9 - _", id)
		return "", false
	}
	return id, true
}

// parseTime reads an API time: RFC 3339, a date and time without a zone
// (UTC), a date (midnight UTC), or a duration meaning that long ago (1h).
// Empty is the zero time.
func parseTime(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return time.Now().Add(-d).UTC(), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a time: want RFC 3339 (2026-03-04T05:06:07Z), a date (2026-03-04) or a duration ago (1h)")
}

// intParam reads an integer query parameter between lo and hi.
func intParam(v string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	if n < lo || n > hi {
		return 0, errors.New("out of range: want " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi))
	}
	return n, nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

func fileSize(path string) int64 {
	if fi, err := os.Stat(path); err == nil {
		return fi.Size()
	}
	return 0
}

type errorJSON struct {
	Error string `json:"error"`
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// The status is sent; all that is left is to stop.
		return
	}
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorJSON{Error: fmt.Sprintf(format, args...)})
}
