package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// auditFixture is a data dir with real recordings of one session per
// protocol, a denied one and an open one.
type auditFixture struct {
	data  string // the data dir
	rec   string // its recordings
	keyID string
	now   time.Time
}

// The fixture's sessions, newest first.
var fixtureIDs = []string{"open-1", "denied-1", "tcp-1", "grpc-1", "http-1", "pg-1", "bearer-1"}

const (
	ann  = "spiffe://postern.local/user/ann"
	bob  = "spiffe://postern.local/user/bob"
	ci   = "spiffe://postern.local/workload/ci"
	mall = "spiffe://postern.local/user/mallory"
)

func strp(s string) *string { return &s }

func fixtureEvents(now time.Time) []protocols.Event {
	var evs []protocols.Event
	at := func(id string, start time.Duration, ms int, typ protocols.EventType, data any) {
		evs = append(evs, protocols.Event{Session: id, Time: now.Add(-start).Add(time.Duration(ms) * time.Millisecond), Type: typ, Data: data})
	}
	startOf := func(id string, ago time.Duration, who, service, proto string, extra func(*protocols.SessionStart)) {
		s := &protocols.SessionStart{Identity: who, Source: "127.0.0.1:40000", Service: service, Protocol: proto, Agent: "a1", Transport: "quic"}
		if extra != nil {
			extra(s)
		}
		at(id, ago, 0, protocols.SessionStarted, s)
	}
	end := func(id string, ago time.Duration, ms int, outcome string, in, out int64) {
		at(id, ago, ms, protocols.SessionEnded, &protocols.SessionEnd{Outcome: outcome, BytesIn: in, BytesOut: out, Duration: int64(ms)})
	}

	// A connection without a certificate: its requests carry bearer tokens.
	const b = 6 * time.Hour
	startOf("bearer-1", b, "", "api", protocols.HTTP, nil)
	at("bearer-1", b, 2, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/v1/orders",
		Verdict: protocols.VerdictDeny, Rule: "authentication", Reason: "no credentials", Status: 401})
	at("bearer-1", b, 5, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/v1/orders",
		Identity: ci, Auth: protocols.AuthAPIKey, Verdict: protocols.VerdictAllow, Rule: "orders-read", Status: 200, Duration: 3})
	at("bearer-1", b, 8, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/v1/orders",
		Identity: bob, Auth: protocols.AuthOIDC, Verdict: protocols.VerdictAllow, Rule: "orders-read", Status: 200, Duration: 2})
	end("bearer-1", b, 10, protocols.OutcomeOK, 90, 900)

	const pg = 5 * time.Hour
	startOf("pg-1", pg, ann, "pg-main", protocols.Postgres, func(s *protocols.SessionStart) {
		s.Groups, s.Database, s.User = []string{"analysts"}, "app", "readonly"
	})
	at("pg-1", pg, 10, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT id, name FROM users", Protocol: "simple",
		Class: "read", Tags: []string{"SELECT"}, Verdict: protocols.VerdictAllow, Rule: "analysts-read", Completed: []string{"SELECT 2"},
		Rows: 2, Duration: 1.5, Columns: []string{"id", "name"}, Result: [][]*string{{strp("1"), strp("ann")}, {strp("2"), strp("bob")}}})
	at("pg-1", pg, 20, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT * FROM orders WHERE id = $1",
		Params: []*string{strp("42")}, Protocol: "extended", Class: "read", Verdict: protocols.VerdictAllow, Rule: "analysts-read",
		Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.7})
	at("pg-1", pg, 30, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: "no-writes", Reason: "write statements are refused"})
	at("pg-1", pg, 30, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "DELETE FROM users", Protocol: "simple",
		Class: "write", Verdict: protocols.VerdictDeny, Rule: "no-writes", Reason: "write statements are refused", Code: "42501",
		Error: `permission denied by rule "no-writes"`, Duration: 0.1})
	at("pg-1", pg, 40, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT 1/0", Protocol: "simple",
		Class: "read", Verdict: protocols.VerdictAllow, Rule: "analysts-read", Code: "22012", Error: "division by zero", Duration: 0.3})
	end("pg-1", pg, 1500, protocols.OutcomeOK, 300, 900)

	const h = 4 * time.Hour
	startOf("http-1", h, ann, "api", protocols.HTTP, nil)
	at("http-1", h, 5, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/v1/orders", Query: "limit=5",
		Identity: ann, Auth: protocols.AuthSVID, Verdict: protocols.VerdictAllow, Rule: "orders-read", Status: 200, Duration: 12})
	at("http-1", h, 9, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: "default-deny", Reason: "no rule allows DELETE"})
	at("http-1", h, 9, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "DELETE", Path: "/v1/orders/1",
		Identity: ann, Verdict: protocols.VerdictDeny, Rule: "default-deny", Reason: "no rule allows DELETE", Status: 403, Duration: 0.2})
	end("http-1", h, 100, protocols.OutcomeOK, 120, 4000)

	const g = 3 * time.Hour
	startOf("grpc-1", g, ci, "orders", protocols.GRPC, nil)
	at("grpc-1", g, 3, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.v1.Orders/Get", Verdict: protocols.VerdictAllow,
		Rule: "ci-orders", Status: 0, Duration: 3})
	at("grpc-1", g, 4, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.v1.Orders/Delete", Verdict: protocols.VerdictDeny,
		Rule: "default-deny", Status: 7, Message: "denied", Duration: 0.1})
	end("grpc-1", g, 50, protocols.OutcomeOK, 50, 60)

	const tc = 2 * time.Hour
	startOf("tcp-1", tc, ann, "echo", protocols.TCP, nil)
	at("tcp-1", tc, 100, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ClientToService, Bytes: 512})
	at("tcp-1", tc, 150, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ServiceToClient, Bytes: 512})
	end("tcp-1", tc, 250, protocols.OutcomeOK, 512, 512)

	const d = 90 * time.Minute
	at("denied-1", d, 0, protocols.SessionStarted, &protocols.SessionStart{Identity: mall, Source: "10.1.2.3:5555",
		Service: "pg-main", Protocol: protocols.Postgres, Database: "app", User: "dba"})
	at("denied-1", d, 1, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: "default-deny", Reason: "no rule admits mallory"})
	end("denied-1", d, 2, protocols.OutcomeDenied, 0, 0)

	const o = 30 * time.Minute
	startOf("open-1", o, bob, "pg-replica", protocols.Postgres, func(s *protocols.SessionStart) { s.Database = "reports" })
	at("open-1", o, 5, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT now()", Protocol: "simple", Class: "read",
		Verdict: protocols.VerdictAllow, Completed: []string{"SELECT 1"}, Rows: 1})
	at("open-1", o, 6, "x.custom", map[string]string{"note": "a type added later"})
	return evs
}

func newAuditFixture(t testing.TB) auditFixture {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	d, err := gateway.OpenDataDir(ctx, dir, spiffeid.RequireTrustDomainFromString("postern.local"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key, err := audit.LoadOrCreateKey(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(d.RecordingsPath(), audit.Options{Key: key, Index: d.Store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, e := range fixtureEvents(now) {
		l.Record(e)
	}
	if err := l.Close(); err != nil { // open-1 stays unsealed
		t.Fatal(err)
	}
	return auditFixture{data: dir, rec: d.RecordingsPath(), keyID: key.ID(), now: now}
}

// ids returns the first column of a text listing, without its header.
func ids(out string) []string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var got []string
	for _, l := range lines[1:] {
		got = append(got, strings.Fields(l)[0])
	}
	return got
}

func TestAuditList(t *testing.T) {
	f := newAuditFixture(t)
	ago := func(d time.Duration) string { return f.now.Add(-d).Format(time.RFC3339) }
	tests := map[string]struct {
		args []string
		want []string
	}{
		"all":                   {nil, fixtureIDs},
		"identity exact":        {[]string{"--identity", ann}, []string{"tcp-1", "http-1", "pg-1"}},
		"identity glob":         {[]string{"--identity", "*/workload/*"}, []string{"grpc-1", "bearer-1"}},
		"identity of a request": {[]string{"--identity", bob}, []string{"open-1", "bearer-1"}},
		"service glob":          {[]string{"--service", "pg-*"}, []string{"open-1", "denied-1", "pg-1"}},
		"since duration":        {[]string{"--since", "1h"}, []string{"open-1"}},
		"since RFC 3339":        {[]string{"--since", ago(150 * time.Minute)}, []string{"open-1", "denied-1", "tcp-1"}},
		"until RFC 3339":        {[]string{"--until", ago(150 * time.Minute)}, []string{"grpc-1", "http-1", "pg-1", "bearer-1"}},
		"since and until":       {[]string{"--since", "4h30m", "--until", "2h30m"}, []string{"grpc-1", "http-1"}},
		"outcome denied":        {[]string{"--outcome", "denied"}, []string{"denied-1"}},
		"outcome open":          {[]string{"--outcome", "open"}, []string{"open-1"}},
		"protocol postgres":     {[]string{"--protocol", "postgres"}, []string{"open-1", "denied-1", "pg-1"}},
		"limit":                 {[]string{"--limit", "2"}, []string{"open-1", "denied-1"}},
		"nothing matches":       {[]string{"--identity", "nobody"}, nil},
	}
	for name, tc := range tests {
		for _, source := range []string{"index", "recordings only"} {
			t.Run(name+"/"+source, func(t *testing.T) {
				args := append([]string{"audit", "list", "--data-dir", f.data}, tc.args...)
				if source == "recordings only" {
					args = append([]string{"audit", "list", "--data-dir", filepath.Join(t.TempDir(), "none"), "--recordings", f.rec}, tc.args...)
				}
				stdout, stderr, code := runCmd(t, args...)
				if code != 0 {
					t.Fatalf("got exit %d (%s), want 0", code, stderr)
				}
				if got := ids(stdout); !slices.Equal(got, tc.want) {
					t.Fatalf("got sessions %v, want %v\n%s", got, tc.want, stdout)
				}
			})
		}
	}

	t.Run("columns", func(t *testing.T) {
		stdout, _, _ := runCmd(t, "audit", "list", "--data-dir", f.data)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"ID", "START", "DURATION", "IDENTITY", "SERVICE", "PROTOCOL", "OUTCOME", "IN", "OUT", "EVENTS", "DENIES"}) {
			t.Fatalf("header %q", lines[0])
		}
		rows := map[string][]string{}
		for _, l := range lines[1:] {
			rows[strings.Fields(l)[0]] = strings.Fields(l)
		}
		pgStart := f.now.Add(-5 * time.Hour).Format(time.RFC3339)
		// pg-1: 8 records (7 events and the seal), 1 deny.
		if want := []string{"pg-1", pgStart, "1.5s", ann, "pg-main", "postgres", "ok", "300", "900", "8", "1"}; !slices.Equal(rows["pg-1"], want) {
			t.Errorf("pg-1: got %v, want %v", rows["pg-1"], want)
		}
		if r := rows["open-1"]; r[2] != "-" || r[6] != "open" {
			t.Errorf("open-1: got %v, want duration - and outcome open", r)
		}
		// bearer-1: identified by its first request's key, and one more.
		if r := rows["bearer-1"]; len(r) != 12 || r[3] != ci || r[4] != "(+1)" {
			t.Errorf("bearer-1: got %v, want identity %s (+1)", r, ci)
		}
		if r := rows["denied-1"]; r[6] != "denied" || r[10] != "1" {
			t.Errorf("denied-1: got %v, want outcome denied, 1 deny", r)
		}
	})
}

func TestAuditListJSON(t *testing.T) {
	f := newAuditFixture(t)
	stdout, stderr, code := runCmd(t, "audit", "list", "--format", "json", "--data-dir", f.data)
	if code != 0 {
		t.Fatalf("got exit %d (%s)", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != len(fixtureIDs) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(fixtureIDs), stdout)
	}
	byID := map[string]map[string]any{}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v in %s", i, err, l)
		}
		if m["id"] != fixtureIDs[i] {
			t.Errorf("line %d: id %v, want %s (newest first)", i, m["id"], fixtureIDs[i])
		}
		for k, v := range m {
			if v == "" || v == float64(0) || v == nil {
				t.Errorf("line %d: empty %q, want it left out", i, k)
			}
		}
		byID[m["id"].(string)] = m
	}
	pg := byID["pg-1"]
	want := map[string]any{"identity": ann, "source": "127.0.0.1:40000", "service": "pg-main", "protocol": "postgres",
		"agent": "a1", "transport": "quic", "database": "app", "db_user": "readonly",
		"start": f.now.Add(-5 * time.Hour).Format(time.RFC3339Nano), "duration_ms": float64(1500),
		"bytes_in": float64(300), "bytes_out": float64(900), "outcome": "ok", "status": "sealed",
		"events": float64(8), "denies": float64(1)}
	for k, v := range want {
		if pg[k] != v {
			t.Errorf("pg-1 %s: got %v, want %v", k, pg[k], v)
		}
	}
	if _, ok := pg["end"]; !ok {
		t.Error("pg-1 has no end")
	}
	if b := byID["bearer-1"]; b["identity"] != ci || fmt.Sprint(b["identities"]) != fmt.Sprint([]any{bob}) {
		t.Errorf("bearer-1: identity %v, identities %v; want %s, [%s]", b["identity"], b["identities"], ci, bob)
	}
	open := byID["open-1"]
	for _, k := range []string{"end", "duration_ms", "outcome"} {
		if _, ok := open[k]; ok {
			t.Errorf("open-1 has %s = %v, want none while open", k, open[k])
		}
	}
	if open["status"] != "open" {
		t.Errorf("open-1 status %v, want open", open["status"])
	}
}

// field returns the value of a "key  value" line of audit show.
func field(out, key string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestAuditShow(t *testing.T) {
	f := newAuditFixture(t)
	tests := map[string]struct {
		id     string
		fields map[string]string
		has    []string
	}{
		"postgres": {
			id: "pg-1",
			fields: map[string]string{"id": "pg-1", "identity": ann, "groups": "analysts", "source": "127.0.0.1:40000",
				"service": "pg-main", "protocol": "postgres", "agent": "a1", "transport": "quic", "database": "app as readonly",
				"duration": "1.5s", "bytes": "300 in, 900 out", "outcome": "ok", "status": "sealed", "records": "8",
				"verified": "ok (8 records, sealed by key " + f.keyID + ")"},
			has: []string{"postgres.query  4", `record 3: rule "no-writes": write statements are refused`,
				"4 queries, 1 refused, 1 failed, 3 rows"},
		},
		"bearer": {
			id:     "bearer-1",
			fields: map[string]string{"identity": ci, "also": bob, "protocol": "http"},
			has:    []string{"http requests by status", "  200  2", "  401  1"},
		},
		"http": {
			id:     "http-1",
			fields: map[string]string{"protocol": "http", "outcome": "ok"},
			has:    []string{"http requests by status", "  200  1", "  403  1", `rule "default-deny": no rule allows DELETE`},
		},
		"grpc": {
			id:     "grpc-1",
			fields: map[string]string{"identity": ci},
			has:    []string{"grpc calls by status", "OK (0)", "PermissionDenied (7)"},
		},
		"denied": {
			id:     "denied-1",
			fields: map[string]string{"outcome": "denied", "database": "app as dba", "source": "10.1.2.3:5555"},
			has:    []string{"no rule admits mallory"},
		},
		"open": {
			id:     "open-1",
			fields: map[string]string{"outcome": "open", "status": "open", "verified": "open (3 records so far)"},
			has:    []string{"x.custom"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, "audit", "show", tc.id, "--data-dir", f.data)
			if code != 0 {
				t.Fatalf("got exit %d (%s)\n%s", code, stderr, stdout)
			}
			for k, v := range tc.fields {
				if got := field(stdout, k); got != v {
					t.Errorf("%s: got %q, want %q\n%s", k, got, v, stdout)
				}
			}
			for _, w := range tc.has {
				if !strings.Contains(stdout, w) {
					t.Errorf("got\n%s\nwant %q", stdout, w)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		stdout, stderr, code := runCmd(t, "audit", "show", "--format", "json", "--data-dir", f.data, "pg-1")
		if code != 0 {
			t.Fatalf("got exit %d (%s)", code, stderr)
		}
		var d struct {
			ID       string         `json:"id"`
			Groups   []string       `json:"groups"`
			Database string         `json:"database"`
			Outcome  string         `json:"outcome"`
			Events   map[string]int `json:"events"`
			Denies   []struct {
				Rule string `json:"rule"`
			} `json:"denies"`
			Postgres struct{ Queries, Refused, Failed int } `json:"postgres"`
			Verified struct{ Result, Key string }           `json:"verified"`
		}
		if err := json.Unmarshal([]byte(stdout), &d); err != nil {
			t.Fatalf("%v in %s", err, stdout)
		}
		if d.ID != "pg-1" || d.Groups[0] != "analysts" || d.Database != "app" || d.Outcome != "ok" ||
			d.Events["postgres.query"] != 4 || len(d.Denies) != 1 || d.Denies[0].Rule != "no-writes" ||
			d.Postgres.Queries != 4 || d.Postgres.Refused != 1 || d.Postgres.Failed != 1 ||
			d.Verified.Result != "ok" || d.Verified.Key != f.keyID {
			t.Errorf("got %+v from\n%s", d, stdout)
		}
	})

	t.Run("no key", func(t *testing.T) {
		stdout, _, code := runCmd(t, "audit", "show", "pg-1", "--data-dir", f.data, "--key", filepath.Join(t.TempDir(), "none.pem"))
		if code != 0 || !strings.HasPrefix(field(stdout, "verified"), "unchecked: no audit public key") {
			t.Errorf("got exit %d, verified %q; want 0 and unchecked", code, field(stdout, "verified"))
		}
	})

	t.Run("unknown", func(t *testing.T) {
		_, stderr, code := runCmd(t, "audit", "show", "nope", "--data-dir", f.data)
		if code != 1 || !strings.Contains(stderr, "no recording of session nope") {
			t.Errorf("got exit %d, stderr %q; want 1 and no recording", code, stderr)
		}
	})
}

func TestAuditVerify(t *testing.T) {
	okLine := func(f auditFixture, id string, n int) string {
		return fmt.Sprintf("ok %s (%d records, sealed by key %s)", id, n, f.keyID)
	}
	t.Run("all ok", func(t *testing.T) {
		f := newAuditFixture(t)
		stdout, stderr, code := runCmd(t, "audit", "verify", "--data-dir", f.data)
		if code != 0 {
			t.Fatalf("got exit %d (%s)\n%s", code, stderr, stdout)
		}
		want := strings.Join([]string{
			okLine(f, "bearer-1", 6), okLine(f, "denied-1", 4), okLine(f, "grpc-1", 5), okLine(f, "http-1", 6),
			"open open-1 (3 records so far)", okLine(f, "pg-1", 8), okLine(f, "tcp-1", 5),
		}, "\n") + "\n"
		if stdout != want {
			t.Fatalf("got\n%s\nwant\n%s", stdout, want)
		}
		stdout, _, code = runCmd(t, "audit", "verify", "pg-1", "--data-dir", f.data)
		if code != 0 || stdout != okLine(f, "pg-1", 8)+"\n" {
			t.Fatalf("verify pg-1: got exit %d, %q", code, stdout)
		}
	})

	tamper := map[string]struct {
		do   func(t *testing.T, path string)
		want string // the FAIL line starts with it
	}{
		"byte flipped": {
			do: func(t *testing.T, path string) {
				b := readFile(t, path)
				b[len(b)/2] ^= 0x40
				writeFile(t, path, b)
			},
			want: "FAIL pg-1: record ",
		},
		"cut short": {
			do: func(t *testing.T, path string) {
				b := readFile(t, path)
				writeFile(t, path, b[:len(b)*2/3])
			},
			want: "FAIL pg-1: record ",
		},
		"deleted": {
			do: func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			},
			want: "FAIL pg-1: no recording in ",
		},
	}
	for name, tc := range tamper {
		t.Run(name, func(t *testing.T) {
			f := newAuditFixture(t)
			tc.do(t, audit.Path(f.rec, "pg-1"))
			stdout, stderr, code := runCmd(t, "audit", "verify", "--data-dir", f.data)
			if code != 1 {
				t.Fatalf("got exit %d, want 1\n%s", code, stdout)
			}
			if want := fmt.Sprintf("postern: audit verify: 1 of %d recordings failed verification\n", len(fixtureIDs)); stderr != want {
				t.Errorf("stderr %q, want %q", stderr, want)
			}
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			if len(lines) != len(fixtureIDs) {
				t.Fatalf("got %d lines, want one per recording:\n%s", len(lines), stdout)
			}
			for _, l := range lines {
				switch {
				case strings.Contains(l, "pg-1"):
					if !strings.HasPrefix(l, tc.want) {
						t.Errorf("got %q, want it to start with %q", l, tc.want)
					}
				case !strings.HasPrefix(l, "ok ") && !strings.HasPrefix(l, "open "):
					t.Errorf("got %q, want the others to verify", l)
				}
			}
			stdout, stderr, code = runCmd(t, "audit", "verify", "pg-1", "--format", "json", "--data-dir", f.data)
			var v struct{ ID, Result, Error string }
			if code != 1 || json.Unmarshal([]byte(stdout), &v) != nil || v.ID != "pg-1" || v.Result != "fail" || v.Error == "" ||
				!strings.Contains(stderr, "1 of 1 recordings failed") {
				t.Errorf("verify pg-1 --format json: got exit %d, %q, stderr %q", code, stdout, stderr)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		f := newAuditFixture(t)
		stdout, _, code := runCmd(t, "audit", "verify", "--format", "json", "--data-dir", f.data)
		if code != 0 {
			t.Fatalf("got exit %d", code)
		}
		results := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var v struct {
				ID, Result, Key string
				Records         int
				Sealed          bool
			}
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%v in %s", err, l)
			}
			results[v.ID] = v.Result
			if v.Result == "ok" && (!v.Sealed || v.Key != f.keyID || v.Records == 0) {
				t.Errorf("got %s, want sealed by %s", l, f.keyID)
			}
		}
		if len(results) != len(fixtureIDs) || results["open-1"] != "open" || results["pg-1"] != "ok" {
			t.Errorf("got %v", results)
		}
	})

	t.Run("recordings only", func(t *testing.T) {
		f := newAuditFixture(t)
		none := filepath.Join(t.TempDir(), "none")
		key := filepath.Join(f.data, audit.PublicKeyFile)
		stdout, stderr, code := runCmd(t, "audit", "verify", "--data-dir", none, "--recordings", f.rec, "--key", key)
		// Without the index nothing says open-1 is still being recorded.
		if code != 1 || !strings.Contains(stdout, "FAIL open-1: record 3: recording ends without a seal") ||
			!strings.Contains(stdout, okLine(f, "pg-1", 8)) || !strings.Contains(stderr, fmt.Sprintf("1 of %d", len(fixtureIDs))) {
			t.Errorf("got exit %d\n%s%s", code, stdout, stderr)
		}
		_, stderr, code = runCmd(t, "audit", "verify", "--data-dir", none, "--recordings", f.rec)
		if code != 1 || !strings.Contains(stderr, "postern: audit verify: no audit public key at "+filepath.Join(none, audit.PublicKeyFile)) ||
			!strings.Contains(stderr, "--key FILE") {
			t.Errorf("no key: got exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("blob store", func(t *testing.T) {
		f := newAuditFixture(t)
		key := filepath.Join(f.data, audit.PublicKeyFile)
		url := "file://" + filepath.ToSlash(f.rec)
		stdout, stderr, code := runCmd(t, "audit", "verify", "--recordings", url, "--key", key, "pg-1")
		if code != 0 || stdout != okLine(f, "pg-1", 8)+"\n" {
			t.Errorf("got exit %d, %q (%s)", code, stdout, stderr)
		}
		stdout, _, code = runCmd(t, "audit", "list", "--recordings", url, "--service", "pg-*")
		if got := ids(stdout); code != 0 || !slices.Equal(got, []string{"open-1", "denied-1", "pg-1"}) {
			t.Errorf("list: got exit %d, %v", code, got)
		}
		_, stderr, code = runCmd(t, "audit", "list", "--recordings", "nosuch://bucket")
		if code != 1 || !strings.Contains(stderr, "opening recordings store") {
			t.Errorf("unknown scheme: got exit %d, %q", code, stderr)
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		f := newAuditFixture(t)
		stdout, _, code := runCmd(t, "audit", "verify", "nope", "--data-dir", f.data)
		if code != 1 || !strings.HasPrefix(stdout, "FAIL nope: no recording") {
			t.Errorf("got exit %d, %q", code, stdout)
		}
	})
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReplay(t *testing.T) {
	f := newAuditFixture(t)
	tests := map[string]struct {
		id   string
		want []string
	}{
		"postgres": {"pg-1", []string{
			"session pg-1: " + ann + " [analysts] from 127.0.0.1:40000 to pg-main (postgres, agent a1, over quic), database app as readonly",
			"[+0.010s] app=> SELECT id, name FROM users;",
			"           id | name\n          ----+------\n            1 | ann\n            2 | bob\n          (2 rows)\n",
			"app=> SELECT * FROM orders WHERE id = $1;\n          -- $1 = '42'\n          SELECT 1\n",
			`[+0.030s] DENIED by rule "no-writes": write statements are refused`,
			"app=> DELETE FROM users;\n          ERROR:  permission denied by rule \"no-writes\"\n          -- SQLSTATE 42501, rule \"no-writes\", 0.100 ms\n",
			"ERROR:  division by zero\n          -- SQLSTATE 22012",
			"[+1.500s] session ended: ok, 300 bytes in, 900 bytes out, 1.5s",
			"recording sealed (key " + f.keyID + ")",
		}},
		"http": {"http-1", []string{
			`[+0.005s] → GET /v1/orders?limit=5  200  12ms  (rule "orders-read")`,
			`[+0.009s] → DELETE /v1/orders/1  403  0.20ms  DENIED by rule "default-deny": no rule allows DELETE`,
		}},
		"grpc": {"grpc-1", []string{
			`[+0.003s] → /orders.v1.Orders/Get  OK (0)  3.0ms  (rule "ci-orders")`,
			`→ /orders.v1.Orders/Delete  PermissionDenied (7): denied`,
		}},
		"tcp": {"tcp-1", []string{"[+0.100s] client → service 512 bytes", "[+0.150s] service → client 512 bytes"}},
		"denied": {"denied-1", []string{`DENIED by rule "default-deny": no rule admits mallory`,
			"session ended: denied"}},
		"open": {"open-1", []string{"reports=> SELECT now();", `[+0.006s] x.custom {"note":"a type added later"}`,
			"the recording ends here"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, "replay", tc.id, "--speed", "0", "--data-dir", f.data)
			if code != 0 {
				t.Fatalf("got exit %d (%s)", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("got\n%s\nwant\n%s", stdout, w)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		stdout, _, code := runCmd(t, "replay", "--format", "json", "--speed", "0", "--data-dir", f.data, "pg-1")
		if code != 0 {
			t.Fatalf("got exit %d", code)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		wantTypes := []string{"session.start", "postgres.query", "postgres.query", "authz.deny", "postgres.query", "postgres.query", "session.end", "recording.seal"}
		if len(lines) != len(wantTypes) {
			t.Fatalf("got %d lines, want %d\n%s", len(lines), len(wantTypes), stdout)
		}
		for i, l := range lines {
			var e struct {
				Seq    int             `json:"seq"`
				Time   time.Time       `json:"time"`
				Offset float64         `json:"offset_ms"`
				Type   string          `json:"type"`
				Data   json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("%v in %s", err, l)
			}
			if e.Seq != i || e.Type != wantTypes[i] || len(e.Data) == 0 || e.Time.IsZero() {
				t.Errorf("line %d: got %s, want seq %d type %s", i, l, i, wantTypes[i])
			}
		}
		if !strings.Contains(lines[6], `"offset_ms":1500`) {
			t.Errorf("session.end: %s, want offset_ms 1500", lines[6])
		}
	})

	t.Run("original timing", func(t *testing.T) {
		start := time.Now()
		_, _, code := runCmd(t, "replay", "tcp-1", "--data-dir", f.data) // 250 ms long
		if el := time.Since(start); code != 0 || el < 240*time.Millisecond {
			t.Errorf("got exit %d after %v, want 0 after the session's 250ms", code, el)
		}
	})

	t.Run("from a copy of the recordings", func(t *testing.T) {
		stdout, _, code := runCmd(t, "replay", "tcp-1", "--speed", "0", "--recordings", f.rec, "--data-dir", filepath.Join(t.TempDir(), "x"))
		if code != 0 || !strings.Contains(stdout, "client → service 512 bytes") {
			t.Errorf("got exit %d\n%s", code, stdout)
		}
	})

	t.Run("broken", func(t *testing.T) {
		g := newAuditFixture(t)
		path := audit.Path(g.rec, "pg-1")
		b := readFile(t, path)
		writeFile(t, path, b[:len(b)-10])
		stdout, stderr, code := runCmd(t, "replay", "pg-1", "--speed", "0", "--data-dir", g.data)
		if code != 1 || !regexp.MustCompile(`^postern: replaying session pg-1: recording broken at record \d+: `).MatchString(stderr) {
			t.Errorf("got exit %d, stderr %q; want 1 naming the record", code, stderr)
		}
		if !strings.Contains(stdout, "session pg-1:") || strings.Contains(stdout, "recording sealed") {
			t.Errorf("got\n%s\nwant what was read before the break", stdout)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		_, stderr, code := runCmd(t, "replay", "nope", "--data-dir", f.data)
		if code != 1 || !strings.Contains(stderr, "no recording of session nope") {
			t.Errorf("got exit %d, %q", code, stderr)
		}
	})
}

func TestAuditUsage(t *testing.T) {
	dir := newDataDir(t)
	tests := map[string]struct {
		args []string
		want int
	}{
		"no audit command":   {[]string{"audit"}, 2},
		"unknown command":    {[]string{"audit", "frob"}, 2},
		"list argument":      {[]string{"audit", "list", "x"}, 2},
		"list bad flag":      {[]string{"audit", "list", "--nope"}, 2},
		"list bad format":    {[]string{"audit", "list", "--format", "yaml"}, 2},
		"list bad since":     {[]string{"audit", "list", "--since", "yesterday"}, 2},
		"list negative ago":  {[]string{"audit", "list", "--until", "-1h"}, 2},
		"list bad limit":     {[]string{"audit", "list", "--limit", "-1"}, 2},
		"list bad outcome":   {[]string{"audit", "list", "--outcome", "fine"}, 2},
		"list bad protocol":  {[]string{"audit", "list", "--protocol", "udp"}, 2},
		"show no id":         {[]string{"audit", "show"}, 2},
		"show bad id":        {[]string{"audit", "show", "../etc"}, 2},
		"show two ids":       {[]string{"audit", "show", "a", "b"}, 2},
		"verify two ids":     {[]string{"audit", "verify", "a", "b"}, 2},
		"verify bad format":  {[]string{"audit", "verify", "--format", "xml"}, 2},
		"replay no id":       {[]string{"replay"}, 2},
		"replay bad speed":   {[]string{"replay", "x", "--speed", "-1"}, 2},
		"replay bad format":  {[]string{"replay", "x", "--format", "xml"}, 2},
		"replay bad id":      {[]string{"replay", "a/b"}, 2},
		"audit help":         {[]string{"audit", "--help"}, 0},
		"list help":          {[]string{"audit", "list", "--help"}, 0},
		"verify help":        {[]string{"audit", "verify", "--help"}, 0},
		"replay help":        {[]string{"replay", "--help"}, 0},
		"no data dir":        {[]string{"audit", "list", "--data-dir", filepath.Join(dir, "missing")}, 1},
		"empty data dir ok":  {[]string{"audit", "list", "--data-dir", dir}, 0},
		"verify, no key yet": {[]string{"audit", "verify", "--data-dir", dir}, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if tc.want == 2 && !slices.Contains(args, "--data-dir") {
				args = append(args[:len(args):len(args)], "--data-dir", dir)
			}
			_, stderr, code := runCmd(t, args...)
			if code != tc.want {
				t.Fatalf("got exit %d, want %d (stderr %q)", code, tc.want, stderr)
			}
			if tc.want != 0 && strings.Count(strings.TrimSpace(lastLine(stderr)), "\n") != 0 || tc.want != 0 && !strings.Contains(stderr, "postern: ") {
				t.Fatalf("stderr %q: want a one-line 'postern: ' error", stderr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// BenchmarkAuditList lists 10,000 indexed sessions, end to end: opening
// the data dir, querying the index and printing.
func BenchmarkAuditList(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "data")
	ctx := context.Background()
	d, err := gateway.OpenDataDir(ctx, dir, spiffeid.RequireTrustDomainFromString("postern.local"))
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now().UTC().Add(-24 * time.Hour)
	const n = 10000
	batch := make([]store.Session, 0, 1000)
	for i := range n {
		s := store.Session{ID: fmt.Sprintf("s-%05d", i), Identity: fmt.Sprintf("spiffe://postern.local/user/u%d", i%50),
			Source: "127.0.0.1:40000", Service: []string{"pg-main", "api", "orders", "echo"}[i%4],
			Protocol: []string{"postgres", "http", "grpc", "tcp"}[i%4], Agent: "a1", Transport: "quic",
			Start: t0.Add(time.Duration(i) * time.Second), End: t0.Add(time.Duration(i)*time.Second + 1500*time.Millisecond),
			BytesIn: int64(i * 10), BytesOut: int64(i * 30), Outcome: "ok", Events: 12, Status: audit.StatusSealed}
		if i%4 == 0 {
			s.Database, s.DBUser = "app", "readonly"
		}
		batch = append(batch, s)
		if len(batch) == cap(batch) {
			if err := d.Store.IndexSessions(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	d.Close()
	for _, format := range []string{"text", "json"} {
		b.Run(format, func(b *testing.B) {
			for b.Loop() {
				if err := run(ctx, []string{"audit", "list", "--format", format, "--data-dir", dir}, io.Discard, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
