package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/audit/ui"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

var td = spiffeid.RequireTrustDomainFromString("postern.local")

// t0 is when the first fixture session starts; session i starts i minutes
// later.
var t0 = time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)

func user(name string) string { return "spiffe://postern.local/user/" + name }

func str(s string) *string { return &s }

// fixture is an archive of real recordings, written by audit.Log and
// indexed in a real store.
type fixture struct {
	dir     string
	store   store.Store
	keys    audit.Keys
	archive *audit.Archive
	// sessions lists the fixture sessions by id with the start time each
	// was given.
	starts map[string]time.Time
	// longEvents is the number of records of "pg-long", seal included.
	longEvents int
}

// session is one fixture session: its start, then events at the given
// offsets from its start, then (unless open) its end.
type session struct {
	id     string
	start  protocols.SessionStart
	events []timed
	end    *protocols.SessionEnd // nil: left open
}

type timed struct {
	after time.Duration
	typ   protocols.EventType
	data  any
}

func q(after time.Duration, d *protocols.PostgresQueryEvent) timed {
	if d.Verdict == "" {
		d.Verdict = protocols.VerdictAllow
	}
	if d.Class == "" {
		d.Class = "read"
	}
	if d.Protocol == "" {
		d.Protocol = "simple"
	}
	return timed{after, protocols.PostgresQuery, d}
}

func fixtureSessions() []session {
	pg := func(identity, service string) protocols.SessionStart {
		return protocols.SessionStart{Identity: identity, Groups: []string{"dev"}, Source: "127.0.0.1:40000",
			Service: service, Protocol: protocols.Postgres, Agent: "db1", Transport: "quic", Database: "app", User: "app_ro"}
	}
	ok := func(in, out int64, ms int64) *protocols.SessionEnd {
		return &protocols.SessionEnd{Outcome: protocols.OutcomeOK, BytesIn: in, BytesOut: out, Duration: ms}
	}
	long := session{id: "pg-long", start: pg(user("ann"), "db"), end: ok(1, 1, 3000)}
	for i := range 1500 {
		long.events = append(long.events, q(time.Duration(i)*2*time.Millisecond, &protocols.PostgresQueryEvent{
			SQL: fmt.Sprintf("SELECT %d", i), Completed: []string{"SELECT 1"}, Rows: 1}))
	}
	return []session{
		{id: "pg-1", start: pg(user("ann"), "db"), end: ok(420, 1337, 1500), events: []timed{
			q(100*time.Millisecond, &protocols.PostgresQueryEvent{
				SQL: "SELECT id, name FROM users WHERE id < $1", Params: []*string{str("3")}, Protocol: "extended",
				Tags: []string{"SELECT"}, Rule: "devs-read", Completed: []string{"SELECT 2"}, Rows: 2, Duration: 1.25,
				Columns: []string{"id", "name"}, Result: [][]*string{{str("1"), str("ann")}, {str("2"), nil}}}),
			{300 * time.Millisecond, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ClientToService, Bytes: 420}},
			{310 * time.Millisecond, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ServiceToClient, Bytes: 1337}},
			q(600*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "SELECT * FROM missing", Code: "42P01",
				Error: `relation "missing" does not exist`, Duration: 0.5}),
			q(1200*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "SELECT now()", Completed: []string{"SELECT 1"}, Rows: 1,
				Columns: []string{"now"}, Result: [][]*string{{str("2026-03-04 05:00:01+00")}}}),
		}},
		{id: "pg-2", start: pg(user("bob"), "db"), end: ok(10, 20, 50), events: []timed{
			q(10*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "INSERT INTO t VALUES (1)", Class: "write",
				Completed: []string{"INSERT 0 1"}, Rows: 1}),
		}},
		// Markup in recorded data must show as text.
		{id: "pg-3", start: pg(user("ann"), "analytics"), end: ok(10, 20, 30), events: []timed{
			q(5*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "SELECT '<script>window.pwned=1</script>' AS x",
				Completed: []string{"SELECT 1"}, Rows: 1, Columns: []string{"<b>x</b>"},
				Result: [][]*string{{str(`<img src=x onerror="window.pwned=2">`)}}}),
		}},
		{id: "http-1", start: protocols.SessionStart{Identity: user("carol"), Source: "127.0.0.1:40001", Service: "web",
			Protocol: protocols.HTTP, Agent: "web1", Transport: "tls"}, end: ok(100, 2000, 400), events: []timed{
			{50 * time.Millisecond, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/api/items",
				Query: "page=2", Auth: protocols.AuthSVID, Verdict: protocols.VerdictAllow, Rule: "web-read", Status: 200,
				BytesOut: 1800, Duration: 12.5}},
			{200 * time.Millisecond, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "DELETE", Path: "/api/items/7",
				Auth: protocols.AuthSVID, Verdict: protocols.VerdictDeny, Rule: protocols.DefaultDeny, Reason: "no rule allows DELETE",
				Status: 403, Duration: 0.3}},
		}},
		{id: "grpc-1", start: protocols.SessionStart{Identity: "spiffe://postern.local/workload/billing", Source: "127.0.0.1:40002",
			Service: "orders", Protocol: protocols.GRPC, Agent: "app1", Transport: "quic"}, end: ok(300, 500, 250), events: []timed{
			{20 * time.Millisecond, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.Orders/Get", Auth: protocols.AuthAPIKey,
				Verdict: protocols.VerdictAllow, Rule: "billing", Status: 0, BytesIn: 30, BytesOut: 200, Duration: 3}},
			{90 * time.Millisecond, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.Orders/Delete", Auth: protocols.AuthAPIKey, Identity: user("frank"),
				Verdict: protocols.VerdictDeny, Rule: protocols.DefaultDeny, Status: 7, Message: "denied by policy", Duration: 0.2}},
		}},
		{id: "denied-1", start: pg(user("mallory"), "db"), events: []timed{
			{1 * time.Millisecond, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: protocols.DefaultDeny, Reason: "no rule admits user mallory"}},
		}, end: &protocols.SessionEnd{Outcome: protocols.OutcomeDenied, Duration: 1}},
		{id: "pg-tampered", start: pg(user("dave"), "db"), end: ok(5, 5, 40), events: []timed{
			q(10*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "UPDATE accounts SET balance = 1000000 WHERE id = 7",
				Class: "write", Completed: []string{"UPDATE 1"}, Rows: 1}),
			q(20*time.Millisecond, &protocols.PostgresQueryEvent{SQL: "SELECT balance FROM accounts", Completed: []string{"SELECT 1"}, Rows: 1}),
		}},
		{id: "open-1", start: protocols.SessionStart{Identity: user("erin"), Source: "127.0.0.1:40003", Service: "ssh",
			Protocol: protocols.TCP, Agent: "bastion", Transport: "quic"}, events: []timed{
			{5 * time.Millisecond, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ClientToService, Bytes: 64}},
		}},
		long,
	}
}

// newFixture writes the fixture sessions under a new data directory.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	d, err := gateway.OpenDataDir(ctx, t.TempDir(), td)
	if err != nil {
		t.Fatalf("OpenDataDir: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	key, err := audit.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := audit.Keys{}
	if err := keys.Add(key.Public()); err != nil {
		t.Fatal(err)
	}
	dir := d.RecordingsPath()
	log, err := audit.Open(dir, audit.Options{Key: key, Index: d.Store, FlushInterval: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	f := &fixture{dir: dir, store: d.Store, keys: keys, starts: map[string]time.Time{}}
	for i, s := range fixtureSessions() {
		start := t0.Add(time.Duration(i) * time.Minute)
		f.starts[s.id] = start
		start0 := s.start
		log.Record(protocols.Event{Session: s.id, Time: start, Type: protocols.SessionStarted, Data: &start0})
		var last time.Duration
		for _, e := range s.events {
			log.Record(protocols.Event{Session: s.id, Time: start.Add(e.after), Type: e.typ, Data: e.data})
			last = e.after
		}
		if s.end != nil {
			end := *s.end
			log.Record(protocols.Event{Session: s.id, Time: start.Add(last + time.Millisecond), Type: protocols.SessionEnded, Data: &end})
		}
		if s.id == "pg-long" {
			f.longEvents = len(s.events) + 3 // start, end, seal
		}
	}
	if err := log.Close(); err != nil {
		t.Fatalf("closing log: %v", err)
	}
	tamper(t, audit.Path(dir, "pg-tampered"))
	f.archive = &audit.Archive{Dir: dir, Index: d.Store, Keys: keys}
	return f
}

// tamper flips one byte in the middle of the file at path.
func tamper(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("tampering: %v", err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("tampering: %v", err)
	}
}

func (f *fixture) server(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(ui.Handler(f.archive))
	t.Cleanup(srv.Close)
	return srv
}

// get fetches path and decodes its JSON body into v (if not nil); it
// fails the test unless the status is want.
func get(t *testing.T, srv *httptest.Server, path string, want int, v any) http.Header {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: got status %d, want %d; body %s", path, resp.StatusCode, want, body)
	}
	if v != nil {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("GET %s: got Content-Type %q, want JSON", path, ct)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: decoding %s: %v", path, body, err)
		}
	}
	return resp.Header
}

type listResp struct {
	Sessions []struct {
		ID         string    `json:"id"`
		Identity   string    `json:"identity"`
		Identities []string  `json:"identities"`
		Service    string    `json:"service"`
		Protocol   string    `json:"protocol"`
		Outcome    string    `json:"outcome"`
		Start      time.Time `json:"start"`
		Status     string    `json:"status"`
		Events     int64     `json:"events"`
		BytesIn    int64     `json:"bytes_in"`
		BytesOut   int64     `json:"bytes_out"`
		DurationMS *int64    `json:"duration_ms"`
	} `json:"sessions"`
	Offset int  `json:"offset"`
	Limit  int  `json:"limit"`
	More   bool `json:"more"`
}

func (l listResp) ids() []string {
	var ids []string
	for _, s := range l.Sessions {
		ids = append(ids, s.ID)
	}
	return ids
}

type eventsResp struct {
	Session string `json:"session"`
	Events  []struct {
		Seq      int64           `json:"seq"`
		Time     time.Time       `json:"time"`
		OffsetMS float64         `json:"offset_ms"`
		Type     string          `json:"type"`
		Data     json.RawMessage `json:"data"`
		Invalid  bool            `json:"invalid"`
	} `json:"events"`
	Next   *int64 `json:"next"`
	Broken *struct {
		Seq    int    `json:"seq"`
		Reason string `json:"reason"`
	} `json:"broken"`
}

type verifyResp struct {
	Status   string `json:"status"`
	Kind     string `json:"kind"`
	Records  int    `json:"records"`
	Sealed   bool   `json:"sealed"`
	Key      string `json:"key"`
	Error    string `json:"error"`
	Seq      *int   `json:"seq"`
	Unsealed bool   `json:"unsealed"`
	Missing  bool   `json:"missing"`
}

// newestFirst is every fixture session id, newest start first.
func (f *fixture) newestFirst() []string {
	var ids []string
	for id := range f.starts {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int { return f.starts[b].Compare(f.starts[a]) })
	return ids
}

func TestPage(t *testing.T) {
	srv := newFixture(t).server(t)
	for path, want := range map[string]string{
		"/":                 "text/html",
		"/static/app.js":    "javascript",
		"/static/style.css": "text/css",
	} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), want) {
			t.Errorf("GET %s: got %d %q, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: got CSP %q", path, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: got X-Content-Type-Options %q, want nosniff", path, got)
		}
		if path == "/" {
			page := string(body)
			if strings.Contains(page, "<script>") || strings.Contains(page, "style=") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
				t.Errorf("the page has inline script or style, or refers to another site")
			}
		}
	}
	for _, path := range []string{"/static/", "/static/nope.js", "/nope"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: got %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestSessionsList(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	var l listResp
	get(t, srv, "/api/sessions", 200, &l)
	if got, want := l.ids(), f.newestFirst(); !slices.Equal(got, want) {
		t.Fatalf("got sessions %v, want %v (newest first)", got, want)
	}
	if l.More || l.Offset != 0 || l.Limit != ui.DefaultLimit {
		t.Errorf("got more=%v offset=%d limit=%d, want false 0 %d", l.More, l.Offset, l.Limit, ui.DefaultLimit)
	}
	for _, s := range l.Sessions {
		if s.ID == "pg-1" {
			if s.Identity != user("ann") || s.Service != "db" || s.Protocol != "postgres" || s.Outcome != "ok" ||
				s.BytesIn != 420 || s.BytesOut != 1337 || s.Status != "sealed" || s.Events != 8 || !s.Start.Equal(f.starts["pg-1"]) ||
				s.DurationMS == nil || *s.DurationMS != 1201 {
				t.Errorf("got pg-1 row %+v", s)
			}
		}
		if s.ID == "open-1" && (s.Status != "open" || s.Outcome != "" || s.DurationMS != nil) {
			t.Errorf("got open-1 row %+v, want open, no outcome, no duration", s)
		}
	}
}

func TestSessionsFilters(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	since := f.starts["pg-3"].Format(time.RFC3339)
	until := f.starts["grpc-1"].Format(time.RFC3339)
	for name, tc := range map[string]struct {
		query string
		want  []string
	}{
		"identity exact":     {"identity=" + url.QueryEscape(user("bob")), []string{"pg-2"}},
		"identity glob":      {"identity=" + url.QueryEscape("spiffe://postern.local/user/a*"), []string{"pg-long", "pg-3", "pg-1"}},
		"identity star":      {"identity=*mallory", []string{"denied-1"}},
		"service glob":       {"service=" + url.QueryEscape("d*"), []string{"pg-long", "pg-tampered", "denied-1", "pg-2", "pg-1"}},
		"outcome":            {"outcome=denied", []string{"denied-1"}},
		"open":               {"outcome=open", []string{"open-1"}},
		"open, paged":        {"outcome=open&offset=1", nil},
		"duration ago":       {"since=1h", nil},
		"protocol":           {"protocol=http", []string{"http-1"}},
		"since and until":    {"since=" + since + "&until=" + until, []string{"http-1", "pg-3"}},
		"date":               {"until=2026-03-04", nil},
		"local time":         {"since=2026-03-04T05:07&protocol=postgres", []string{"pg-long"}},
		"combined":           {"identity=" + url.QueryEscape(user("ann")) + "&service=db", []string{"pg-long", "pg-1"}},
		"nothing":            {"identity=nobody", nil},
		"identity of a call": {"identity=" + url.QueryEscape(user("frank")), []string{"grpc-1"}},
	} {
		t.Run(name, func(t *testing.T) {
			var l listResp
			get(t, srv, "/api/sessions?"+tc.query, 200, &l)
			if got := l.ids(); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if l.Sessions == nil {
				t.Errorf("sessions is null, want an array")
			}
			for _, s := range l.Sessions {
				if s.ID == "grpc-1" && !slices.Equal(s.Identities, []string{user("frank")}) {
					t.Errorf("grpc-1: identities %q, want [%s]", s.Identities, user("frank"))
				}
			}
		})
	}
}

func TestSessionsPaging(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	var all []string
	for offset := 0; ; offset += 2 {
		var l listResp
		get(t, srv, fmt.Sprintf("/api/sessions?limit=2&offset=%d", offset), 200, &l)
		if len(l.Sessions) > 2 {
			t.Fatalf("got %d sessions on a page of 2", len(l.Sessions))
		}
		all = append(all, l.ids()...)
		if !l.More {
			break
		}
	}
	if want := f.newestFirst(); !slices.Equal(all, want) {
		t.Errorf("pages got %v, want %v", all, want)
	}
	var l listResp
	get(t, srv, "/api/sessions?offset=100", 200, &l)
	if len(l.Sessions) != 0 || l.More {
		t.Errorf("past the end: got %v more=%v, want nothing", l.ids(), l.More)
	}
}

func TestErrors(t *testing.T) {
	srv := newFixture(t).server(t)
	for name, tc := range map[string]struct {
		method, path string
		want         int
	}{
		"limit zero":          {"GET", "/api/sessions?limit=0", 400},
		"limit too big":       {"GET", "/api/sessions?limit=1001", 400},
		"limit not a number":  {"GET", "/api/sessions?limit=ten", 400},
		"negative offset":     {"GET", "/api/sessions?offset=-1", 400},
		"bad since":           {"GET", "/api/sessions?since=yesterday", 400},
		"bad until":           {"GET", "/api/sessions?until=2026-13-01", 400},
		"bad id":              {"GET", "/api/sessions/bad.id", 400},
		"id with slash":       {"GET", "/api/sessions/a%2Fb", 400},
		"id too long":         {"GET", "/api/sessions/" + strings.Repeat("a", 129), 400},
		"bad id events":       {"GET", "/api/sessions/bad!id/events", 400},
		"bad id verify":       {"GET", "/api/sessions/%3Cscript%3E/verify", 400},
		"bad from":            {"GET", "/api/sessions/pg-1/events?from=-1", 400},
		"bad event limit":     {"GET", "/api/sessions/pg-1/events?limit=0", 400},
		"event limit too big": {"GET", "/api/sessions/pg-1/events?limit=5001", 400},
		"unknown session":     {"GET", "/api/sessions/nope", 404},
		"unknown events":      {"GET", "/api/sessions/nope/events", 404},
		"unknown verify":      {"GET", "/api/sessions/nope/verify", 404},
		"unknown endpoint":    {"GET", "/api/nope", 404},
		"unknown subpath":     {"GET", "/api/sessions/pg-1/nope", 404},
		"post":                {"POST", "/api/sessions", 405},
		"delete":              {"DELETE", "/api/sessions/pg-1", 405},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.want || body.Error == "" {
				t.Errorf("got %d %q, want %d with an error", resp.StatusCode, body.Error, tc.want)
			}
		})
	}
}

func TestSessionDetail(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	var d struct {
		Session struct {
			ID, Identity, Database string
			DBUser                 string `json:"db_user"`
		} `json:"session"`
		Recording struct {
			Kind string
			Size int64
		} `json:"recording"`
		Summary struct {
			Records int
			Sealed  bool
			Events  map[string]int
			Start   protocols.SessionStart
			End     protocols.SessionEnd
		} `json:"summary"`
		SummaryError string `json:"summary_error"`
	}
	get(t, srv, "/api/sessions/pg-1", 200, &d)
	if d.Session.ID != "pg-1" || d.Session.Identity != user("ann") || d.Session.Database != "app" || d.Session.DBUser != "app_ro" {
		t.Errorf("got session %+v", d.Session)
	}
	if d.Recording.Kind != "sealed" || d.Recording.Size == 0 {
		t.Errorf("got recording %+v, want sealed with a size", d.Recording)
	}
	if d.Summary.Records != 8 || !d.Summary.Sealed || d.Summary.Events["postgres.query"] != 3 || d.Summary.Events["tcp.data"] != 2 ||
		!slices.Equal(d.Summary.Start.Groups, []string{"dev"}) || d.Summary.End.Outcome != "ok" || d.SummaryError != "" {
		t.Errorf("got summary %+v (error %q)", d.Summary, d.SummaryError)
	}

	get(t, srv, "/api/sessions/pg-tampered", 200, &d)
	if d.SummaryError == "" {
		t.Errorf("tampered recording: no summary error")
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	var e eventsResp
	get(t, srv, "/api/sessions/pg-1/events", 200, &e)
	var types []string
	for i, ev := range e.Events {
		types = append(types, ev.Type)
		if ev.Seq != int64(i) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
	}
	want := []string{"session.start", "postgres.query", "tcp.data", "tcp.data", "postgres.query", "postgres.query", "session.end", "recording.seal"}
	if !slices.Equal(types, want) || e.Next != nil || e.Broken != nil {
		t.Fatalf("got %v next=%v broken=%v, want %v to the end", types, e.Next, e.Broken, want)
	}
	if e.Events[1].OffsetMS != 100 || e.Events[4].OffsetMS != 600 || !e.Events[0].Time.Equal(f.starts["pg-1"]) {
		t.Errorf("got offsets %v and %v, start %v", e.Events[1].OffsetMS, e.Events[4].OffsetMS, e.Events[0].Time)
	}
	var pq protocols.PostgresQueryEvent
	if err := json.Unmarshal(e.Events[1].Data, &pq); err != nil {
		t.Fatal(err)
	}
	if pq.SQL != "SELECT id, name FROM users WHERE id < $1" || len(pq.Result) != 2 || *pq.Result[0][1] != "ann" || pq.Result[1][1] != nil ||
		len(pq.Params) != 1 || *pq.Params[0] != "3" {
		t.Errorf("got query %+v", pq)
	}

	// A long recording comes a page at a time.
	var seqs []int64
	from := int64(0)
	pages := 0
	for {
		var p eventsResp
		get(t, srv, fmt.Sprintf("/api/sessions/pg-long/events?from=%d&limit=400", from), 200, &p)
		pages++
		if len(p.Events) == 0 || len(p.Events) > 400 || p.Events[0].Seq != from {
			t.Fatalf("page from %d: got %d events starting at %v", from, len(p.Events), p.Events)
		}
		for _, ev := range p.Events {
			seqs = append(seqs, ev.Seq)
		}
		if p.Next == nil {
			break
		}
		from = *p.Next
	}
	if len(seqs) != f.longEvents || pages != (f.longEvents+399)/400 {
		t.Errorf("got %d events in %d pages, want %d", len(seqs), pages, f.longEvents)
	}
	for i, s := range seqs {
		if s != int64(i) {
			t.Fatalf("event %d has seq %d", i, s)
		}
	}
	var end eventsResp
	get(t, srv, "/api/sessions/pg-long/events?from=100000", 200, &end)
	if len(end.Events) != 0 || end.Next != nil {
		t.Errorf("past the end: got %d events, next %v", len(end.Events), end.Next)
	}
	var mid eventsResp
	get(t, srv, "/api/sessions/pg-long/events?from=1000&limit=1", 200, &mid)
	if len(mid.Events) != 1 || mid.Events[0].Seq != 1000 || mid.Next == nil || *mid.Next != 1001 || mid.Events[0].OffsetMS != 1998 {
		t.Errorf("from 1000: got %+v next %v", mid.Events, mid.Next)
	}

	var bad eventsResp
	get(t, srv, "/api/sessions/pg-tampered/events", 200, &bad)
	if bad.Broken == nil || bad.Broken.Reason == "" || bad.Next != nil {
		t.Errorf("tampered: got broken %+v next %v, want the break", bad.Broken, bad.Next)
	}
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t)
	var keyID string
	for id := range f.keys {
		keyID = id
	}
	for id, want := range map[string]verifyResp{
		"pg-1":     {Status: "ok", Kind: "sealed", Records: 8, Sealed: true, Key: keyID},
		"denied-1": {Status: "ok", Kind: "sealed", Records: 4, Sealed: true, Key: keyID},
		"open-1":   {Status: "open", Kind: "open", Records: 2},
	} {
		var v verifyResp
		get(t, srv, "/api/sessions/"+id+"/verify", 200, &v)
		if v != want {
			t.Errorf("%s: got %+v, want %+v", id, v, want)
		}
	}
	var v verifyResp
	get(t, srv, "/api/sessions/pg-tampered/verify", 200, &v)
	if v.Status != "fail" || v.Error == "" || v.Unsealed || v.Missing {
		t.Errorf("tampered: got %+v, want a failure", v)
	}
	t.Logf("tampered recording: %s", v.Error)

	// An indexed session whose recording was removed fails.
	if err := os.Remove(audit.Path(f.dir, "pg-2")); err != nil {
		t.Fatal(err)
	}
	v = verifyResp{}
	get(t, srv, "/api/sessions/pg-2/verify", 200, &v)
	if v.Status != "fail" || !v.Missing {
		t.Errorf("removed recording: got %+v, want missing", v)
	}
	var d struct {
		Session      struct{ ID string }
		SummaryError string `json:"summary_error"`
	}
	get(t, srv, "/api/sessions/pg-2", 200, &d)
	if d.Session.ID != "pg-2" || d.SummaryError == "" {
		t.Errorf("removed recording: got %+v", d)
	}
	get(t, srv, "/api/sessions/pg-2/events", 404, nil)

	// Without keys there is nothing to verify with.
	noKeys := httptest.NewServer(ui.Handler(&audit.Archive{Dir: f.dir, Index: f.store}))
	defer noKeys.Close()
	get(t, noKeys, "/api/sessions/pg-1/verify", http.StatusServiceUnavailable, nil)
}

// Without an index the archive lists sessions by reading the recordings.
func TestNoIndex(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(ui.Handler(&audit.Archive{Dir: f.dir, Keys: f.keys}))
	defer srv.Close()
	var l listResp
	get(t, srv, "/api/sessions?protocol=postgres&limit=3", 200, &l)
	if got, want := l.ids(), []string{"pg-long", "pg-tampered", "denied-1"}; !slices.Equal(got, want) || !l.More {
		t.Errorf("got %v more=%v", got, l.More)
	}
	var v verifyResp
	get(t, srv, "/api/sessions/pg-1/verify", 200, &v)
	if v.Status != "ok" {
		t.Errorf("got %+v", v)
	}
}

func TestLocalOnly(t *testing.T) {
	h := ui.LocalOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for host, want := range map[string]int{
		"127.0.0.1:8082":        204,
		"localhost:8082":        204,
		"LOCALHOST":             204,
		"[::1]:8082":            204,
		"127.1.2.3":             204,
		"evil.example:8082":     403,
		"127.0.0.1.nip.io:8082": 403,
		"192.168.1.10:8082":     403,
		"":                      403,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %q: got %d, want %d", host, w.Code, want)
		}
	}
}

// BenchmarkSessions lists pages of 10,000 indexed sessions.
func BenchmarkSessions(b *testing.B) {
	ctx := context.Background()
	d, err := gateway.OpenDataDir(ctx, b.TempDir(), td)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	const n = 10_000
	rows := make([]store.Session, n)
	for i := range rows {
		start := t0.Add(time.Duration(i) * time.Second)
		outcome := protocols.OutcomeOK
		if i%10 == 0 {
			outcome = protocols.OutcomeDenied
		}
		rows[i] = store.Session{ID: fmt.Sprintf("s-%05d", i), Identity: user(fmt.Sprintf("u%03d", i%500)),
			Source: "127.0.0.1:40000", Service: []string{"db", "web", "orders", "ssh"}[i%4],
			Protocol: []string{"postgres", "http", "grpc", "tcp"}[i%4], Agent: "a1", Transport: "quic",
			Start: start, End: start.Add(time.Second), BytesIn: int64(i), BytesOut: int64(2 * i), Outcome: outcome,
			Events: 10, Status: audit.StatusSealed}
	}
	for i := 0; i < n; i += 1000 {
		if err := d.Store.IndexSessions(ctx, rows[i:i+1000]); err != nil {
			b.Fatal(err)
		}
	}
	h := ui.Handler(&audit.Archive{Dir: d.RecordingsPath(), Index: d.Store})
	for name, query := range map[string]string{
		"first-page":       "limit=100",
		"last-page":        "limit=100&offset=9900",
		"identity-glob":    "identity=" + url.QueryEscape("spiffe://postern.local/user/u01*") + "&limit=100",
		"outcome+protocol": "outcome=denied&protocol=postgres&limit=100",
		"page-1000":        "limit=1000",
	} {
		b.Run(name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/api/sessions?"+query, nil)
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("got %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
