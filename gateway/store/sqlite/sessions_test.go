package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/gateway/store"
)

var sessionT0 = time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)

func sessionIDs(ss []store.Session) []string {
	ids := []string{}
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

func sessionEqual(a, b store.Session) bool {
	return a.ID == b.ID && a.Identity == b.Identity && a.Source == b.Source && a.Service == b.Service &&
		a.Protocol == b.Protocol && a.Agent == b.Agent && a.Transport == b.Transport &&
		a.Database == b.Database && a.DBUser == b.DBUser &&
		a.Start.Equal(b.Start) && a.Start.IsZero() == b.Start.IsZero() &&
		a.End.Equal(b.End) && a.End.IsZero() == b.End.IsZero() &&
		a.BytesIn == b.BytesIn && a.BytesOut == b.BytesOut && a.Outcome == b.Outcome &&
		a.Events == b.Events && a.Denies == b.Denies && a.Status == b.Status &&
		slices.Equal(a.Identities, b.Identities)
}

func TestSessionRoundTrip(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	sealed := store.Session{
		ID: "s1", Identity: "spiffe://td/user/ann", Identities: []string{"spiffe://td/user/bo", "spiffe://td/user/cy"},
		Source: "10.0.0.1:4000", Service: "pg",
		Protocol: "postgres", Agent: "db1", Transport: "quic", Database: "shop", DBUser: "app",
		Start: sessionT0, End: sessionT0.Add(time.Minute), BytesIn: 100, BytesOut: 2000,
		Outcome: "ok", Events: 42, Denies: 1, Status: "sealed",
	}
	open := store.Session{
		ID: "s2", Identity: "spiffe://td/user/bob", Service: "ssh", Protocol: "tcp",
		Start: sessionT0.Add(time.Second), Status: "open",
	}
	if err := d.IndexSessions(ctx, []store.Session{sealed, open}); err != nil {
		t.Fatalf("IndexSessions: %v", err)
	}

	tests := []struct {
		name string
		want store.Session
	}{
		{name: "sealed", want: sealed},
		{name: "open has zero end", want: open},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := d.Session(ctx, tt.want.ID)
			if err != nil {
				t.Fatalf("Session: %v", err)
			}
			if !sessionEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if got.Start.Location() != time.UTC {
				t.Errorf("got start in %s, want UTC", got.Start.Location())
			}
		})
	}

	// A zero time is stored as 0.
	var end int64
	if err := d.db.QueryRowContext(ctx, `SELECT end_at FROM sessions WHERE id = 's2'`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	if end != 0 {
		t.Fatalf("open session: got end_at %d stored, want 0", end)
	}

	// Sealing replaces the open session by ID.
	open.End, open.Outcome, open.Status, open.Events = sessionT0.Add(time.Hour), "truncated", "sealed", 7
	open.Identity = "spiffe://td/user/bob2"
	if err := d.IndexSessions(ctx, []store.Session{open}); err != nil {
		t.Fatalf("IndexSessions (replace): %v", err)
	}
	got, err := d.Session(ctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if !sessionEqual(got, open) {
		t.Fatalf("after replace: got %+v, want %+v", got, open)
	}
	all, err := d.Sessions(ctx, store.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if ids, want := sessionIDs(all), []string{"s2", "s1"}; !slices.Equal(ids, want) {
		t.Fatalf("got sessions %v, want %v", ids, want)
	}
	if !sessionEqual(all[1], sealed) {
		t.Fatalf("Sessions: got %+v, want %+v", all[1], sealed)
	}
}

func TestSessionNotFound(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	if _, err := d.Session(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty index: got %v, want %v", err, store.ErrNotFound)
	}
	if err := d.IndexSessions(ctx, []store.Session{{ID: "s1", Start: sessionT0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Session(ctx, "S1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("id in other case: got %v, want %v", err, store.ErrNotFound)
	}
	ss, err := openTest(t, testPath(t)).Sessions(ctx, store.SessionFilter{})
	if err != nil || len(ss) != 0 {
		t.Fatalf("empty index: got %v, %v; want no sessions", ss, err)
	}
}

func TestIndexSessionsRefused(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	if err := d.IndexSessions(ctx, nil); err != nil {
		t.Fatalf("no sessions: %v", err)
	}
	err := d.IndexSessions(ctx, []store.Session{{ID: "ok", Start: sessionT0}, {Start: sessionT0}})
	if err == nil {
		t.Fatal("empty id: got nil error, want one")
	}
	if _, err := d.Session(ctx, "ok"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("batch with a bad session: got %v for its good one, want nothing indexed", err)
	}
	if _, err := d.Sessions(ctx, store.SessionFilter{Limit: -1}); err == nil {
		t.Fatal("negative limit: got nil error, want one")
	}
}

// TestIndexSessionsAtomic checks that a batch failing in the database
// half-way leaves nothing behind, not even the replaced sessions' changes.
func TestIndexSessionsAtomic(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	if err := d.IndexSessions(ctx, []store.Session{{ID: "s000", Status: "open", Start: sessionT0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.db.ExecContext(ctx, `CREATE TRIGGER fail BEFORE INSERT ON sessions
		WHEN NEW.id = 'bad' BEGIN SELECT RAISE(ABORT, 'bad session'); END`); err != nil {
		t.Fatal(err)
	}
	ss := make([]store.Session, 100)
	for i := range ss {
		ss[i] = store.Session{ID: fmt.Sprintf("s%03d", i), Status: "sealed", Start: sessionT0}
	}
	ss[50].ID = "bad"
	if err := d.IndexSessions(ctx, ss); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("got %v, want the trigger's error", err)
	}
	got, err := d.Sessions(ctx, store.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Status != "open" {
		t.Fatalf("got %+v, want only s000, still open", got)
	}
}

func TestSessionsFilter(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	at := func(m int) time.Time { return sessionT0.Add(time.Duration(m) * time.Minute) }
	index := []store.Session{
		{ID: "a", Identity: "spiffe://td/user/ann", Service: "pg-prod", Protocol: "postgres", Outcome: "ok", Start: at(0)},
		{ID: "b", Identity: "spiffe://td/user/Ann", Service: "pg-dev", Protocol: "postgres", Outcome: "denied", Start: at(1)},
		{ID: "c", Identity: "spiffe://td/user/bob", Service: "ssh", Protocol: "tcp", Outcome: "error", Start: at(2)},
		{ID: "d", Identity: "spiffe://td/workload/ci", Service: "web", Protocol: "http", Outcome: "ok", Start: at(3)},
		{ID: "e", Identity: "spiffe://td/user/100%", Service: "a_b", Protocol: "tcp", Outcome: "truncated", Start: at(4)},
		{ID: "f", Identity: "spiffe://td/user/100x", Service: "axb", Protocol: "tcp", Outcome: "ok", Start: at(5)},
		{ID: "g", Identity: `spiffe://td/user/back\slash`, Service: `c\d`, Protocol: "tcp", Status: "open", Start: at(6)},
		{ID: "h", Identity: "spiffe://td/user/backxslash", Service: "cd", Protocol: "tcp", Status: "open", Start: at(7)},
		// Same start as "c": ties are ordered by ID.
		{ID: "c2", Identity: "spiffe://td/user/bob", Service: "ssh", Protocol: "tcp", Outcome: "ok", Start: at(2)},
		{ID: "c0", Identity: "spiffe://td/user/bob", Service: "ssh", Protocol: "tcp", Outcome: "ok", Start: at(2)},
		// Not started: zero start, listed last.
		{ID: "z", Identity: "spiffe://td/user/zed", Service: "ssh", Protocol: "tcp"},
	}
	if err := d.IndexSessions(ctx, index); err != nil {
		t.Fatalf("IndexSessions: %v", err)
	}
	tests := []filterTest{
		{name: "all, newest first, ties by id", f: store.SessionFilter{},
			want: []string{"h", "g", "f", "e", "d", "c", "c0", "c2", "b", "a", "z"}},
		{name: "identity exact", f: store.SessionFilter{Identity: "spiffe://td/user/ann"}, want: []string{"a"}},
		{name: "identity exact is case-sensitive", f: store.SessionFilter{Identity: "spiffe://td/user/ANN"}, want: []string{}},
		{name: "identity glob", f: store.SessionFilter{Identity: "spiffe://td/user/*"},
			want: []string{"h", "g", "f", "e", "c", "c0", "c2", "b", "a", "z"}},
		{name: "identity glob is case-sensitive", f: store.SessionFilter{Identity: "*/ann"}, want: []string{"a"}},
		{name: "identity glob is case-sensitive, upper", f: store.SessionFilter{Identity: "*/A*"}, want: []string{"b"}},
		{name: "identity glob several stars", f: store.SessionFilter{Identity: "spiffe://*/user/*o*"},
			want: []string{"c", "c0", "c2"}},
		{name: "identity glob in the middle", f: store.SessionFilter{Identity: "spiffe://td/*/ci"}, want: []string{"d"}},
		{name: "only stars", f: store.SessionFilter{Identity: "**"},
			want: []string{"h", "g", "f", "e", "d", "c", "c0", "c2", "b", "a", "z"}},
		{name: "glob with literal percent", f: store.SessionFilter{Identity: "*/100%"}, want: []string{"e"}},
		{name: "exact with literal percent", f: store.SessionFilter{Identity: "spiffe://td/user/100%"}, want: []string{"e"}},
		{name: "glob with literal underscore", f: store.SessionFilter{Service: "a_*"}, want: []string{"e"}},
		{name: "glob with literal backslash", f: store.SessionFilter{Identity: `*back\slash`}, want: []string{"g"}},
		{name: "glob with literal backslash in service", f: store.SessionFilter{Service: `c\*`}, want: []string{"g"}},
		{name: "service exact", f: store.SessionFilter{Service: "ssh"}, want: []string{"c", "c0", "c2", "z"}},
		{name: "service glob", f: store.SessionFilter{Service: "pg-*"}, want: []string{"b", "a"}},
		{name: "service glob suffix", f: store.SessionFilter{Service: "*-prod"}, want: []string{"a"}},
		{name: "service glob is case-sensitive", f: store.SessionFilter{Service: "PG-*"}, want: []string{}},
		{name: "outcome", f: store.SessionFilter{Outcome: "ok"}, want: []string{"f", "d", "c0", "c2", "a"}},
		{name: "protocol", f: store.SessionFilter{Protocol: "postgres"}, want: []string{"b", "a"}},
		{name: "status", f: store.SessionFilter{Status: "open"}, want: []string{"h", "g"}},
		{name: "status and limit", f: store.SessionFilter{Status: "open", Limit: 1}, want: []string{"h"}},
		{name: "since is inclusive", f: store.SessionFilter{Since: at(5)}, want: []string{"h", "g", "f"}},
		{name: "until is exclusive", f: store.SessionFilter{Until: at(1)}, want: []string{"a", "z"}},
		{name: "since and until", f: store.SessionFilter{Since: at(2), Until: at(4)},
			want: []string{"d", "c", "c0", "c2"}},
		{name: "limit", f: store.SessionFilter{Limit: 3}, want: []string{"h", "g", "f"}},
		{name: "limit past the end", f: store.SessionFilter{Service: "ssh", Limit: 10}, want: []string{"c", "c0", "c2", "z"}},
		{name: "limit with glob", f: store.SessionFilter{Identity: "*/A*", Limit: 1}, want: []string{"b"}},
		{name: "limit with glob counts matches only", f: store.SessionFilter{Identity: "*/a*", Limit: 1}, want: []string{"a"}},
		{name: "everything", f: store.SessionFilter{Identity: "spiffe://td/user/*", Service: "s*", Outcome: "ok",
			Protocol: "tcp", Since: at(2), Until: at(3), Limit: 1}, want: []string{"c0"}},
	}
	checkFilters(t, d, tests)
}

// TestSessionsFilterIdentities: an identity filter matches the identity
// column or any of the others that made requests in a session.
func TestSessionsFilterIdentities(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	at := func(m int) time.Time { return sessionT0.Add(time.Duration(m) * time.Minute) }
	index := []store.Session{
		{ID: "a", Identity: "spiffe://td/user/ann", Service: "web", Start: at(0)},
		{ID: "b", Identity: "spiffe://td/workload/ci", Identities: []string{"spiffe://td/user/ann", "spiffe://td/user/b_b"},
			Service: "web", Start: at(1)},
		{ID: "c", Identity: "spiffe://td/user/bob", Identities: []string{"spiffe://td/user/annex"}, Service: "web", Start: at(2)},
		{ID: "d", Identity: "spiffe://td/user/bxb", Service: "web", Start: at(3)},
	}
	if err := d.IndexSessions(ctx, index); err != nil {
		t.Fatalf("IndexSessions: %v", err)
	}
	tests := []filterTest{
		{name: "exact, column or others", f: store.SessionFilter{Identity: "spiffe://td/user/ann"}, want: []string{"b", "a"}},
		{name: "exact is a whole line, not a prefix", f: store.SessionFilter{Identity: "spiffe://td/user/anne"}, want: []string{}},
		{name: "exact, only in others", f: store.SessionFilter{Identity: "spiffe://td/user/annex"}, want: []string{"c"}},
		{name: "exact with limit", f: store.SessionFilter{Identity: "spiffe://td/user/ann", Limit: 1}, want: []string{"b"}},
		{name: "exact underscore is literal", f: store.SessionFilter{Identity: "spiffe://td/user/b_b"}, want: []string{"b"}},
		{name: "glob over others", f: store.SessionFilter{Identity: "*/ann*"}, want: []string{"c", "b", "a"}},
		{name: "glob underscore is literal", f: store.SessionFilter{Identity: "*/b_b"}, want: []string{"b"}},
		{name: "glob within one line, not across two", f: store.SessionFilter{Identity: "*ann*b_b"}, want: []string{}},
		{name: "glob matches one line whole", f: store.SessionFilter{Identity: "spiffe://td/user/ann"}, want: []string{"b", "a"}},
	}
	checkFilters(t, d, tests)
}

// filterTest is a filter and the sessions it must list, in order.
type filterTest struct {
	name string
	f    store.SessionFilter
	want []string
}

// checkFilters runs each test against d, and checks that what d lists
// store.SessionFilter.Matches too.
func checkFilters(t *testing.T, d *DB, tests []filterTest) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := d.Sessions(context.Background(), tt.f)
			if err != nil {
				t.Fatalf("Sessions: %v", err)
			}
			if ids := sessionIDs(got); !slices.Equal(ids, tt.want) {
				t.Fatalf("got %v, want %v", ids, tt.want)
			}
			for _, s := range got {
				if !tt.f.Matches(s) {
					t.Errorf("session %s listed but store.SessionFilter.Matches refuses it", s.ID)
				}
			}
		})
	}
}

// TestSessionsManyChunks lists more sessions than fit in a few chunks, with
// limits on and around chunk boundaries.
func TestSessionsManyChunks(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	const n = 3*chunkSize + 7
	ss := benchSessions(n)
	if err := d.IndexSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	var want []string // newest first
	for i := n - 1; i >= 0; i-- {
		want = append(want, ss[i].ID)
	}
	for _, limit := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 2 * chunkSize, n, n + 1} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			got, err := d.Sessions(ctx, store.SessionFilter{Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			w := want
			if limit > 0 && limit < n {
				w = want[:limit]
			}
			if ids := sessionIDs(got); !slices.Equal(ids, w) {
				t.Fatalf("got %d sessions, want %d in order", len(ids), len(w))
			}
			if !sessionEqual(got[len(got)-1], ss[n-len(w)]) {
				t.Fatalf("last: got %+v, want %+v", got[len(got)-1], ss[n-len(w)])
			}
		})
	}
}

func TestLikePattern(t *testing.T) {
	tests := map[string]string{
		"abc":     "abc",
		"a*":      "a%",
		"*a*b*":   "%a%b%",
		"100%*":   `100\%%`,
		"a_b":     `a\_b`,
		`a\b*`:    `a\\b%`,
		"é*ü":     "é%ü",
		"":        "",
		`%_\*`:    `\%\_\\%`,
		"no-glob": "no-glob",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := likePattern(in); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestSessionsQueryPlan checks that listing sessions walks the start index
// instead of sorting the table.
func TestSessionsQueryPlan(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	tests := map[string]store.SessionFilter{
		"all":   {},
		"since": {Since: sessionT0},
		"limit": {Limit: 10},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			q := d.sessionQuery(f)
			rows, err := d.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.sql, q.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			p := strings.Join(plan, "; ")
			if !strings.Contains(p, "sessions_start_at") || strings.Contains(p, "TEMP B-TREE") {
				t.Fatalf("plan %q: want a walk of sessions_start_at without a sort", p)
			}
		})
	}
}

// benchSessions is an index of n sessions: 200 identities, 50 services,
// one session a minute.
func benchSessions(n int) []store.Session {
	protocols := []string{"postgres", "tcp", "http"}
	outcomes := []string{"ok", "ok", "ok", "denied", "error", "truncated"}
	ss := make([]store.Session, n)
	for i := range ss {
		start := sessionT0.Add(time.Duration(i) * time.Minute)
		ss[i] = store.Session{
			ID:        fmt.Sprintf("sess-%08d", i),
			Identity:  fmt.Sprintf("spiffe://postern.local/user/user%03d", i%200),
			Source:    fmt.Sprintf("10.0.%d.%d:%d", i%256, (i/256)%256, 40000+i%20000),
			Service:   fmt.Sprintf("svc%02d", i%50),
			Protocol:  protocols[i%len(protocols)],
			Agent:     fmt.Sprintf("agent%02d", i%10),
			Transport: "quic",
			Database:  "shop",
			DBUser:    "app",
			Start:     start,
			End:       start.Add(30 * time.Second),
			BytesIn:   int64(i * 10),
			BytesOut:  int64(i * 100),
			Outcome:   outcomes[i%len(outcomes)],
			Events:    int64(i % 1000),
			Denies:    int64(i % 3),
			Status:    "sealed",
		}
	}
	return ss
}

const benchN = 10000

func benchDB(b *testing.B) *DB {
	b.Helper()
	d, err := Open(context.Background(), b.TempDir()+"/postern.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.IndexSessions(context.Background(), benchSessions(benchN)); err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkIndexSessions(b *testing.B) {
	ctx := context.Background()
	d, err := Open(ctx, b.TempDir()+"/postern.db")
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ss := benchSessions(benchN)
	for b.Loop() {
		// Replaces the same 10,000 rows after the first round.
		if err := d.IndexSessions(ctx, ss); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSessionsAll(b *testing.B) {
	ctx := context.Background()
	d := benchDB(b)
	for b.Loop() {
		ss, err := d.Sessions(ctx, store.SessionFilter{})
		if err != nil {
			b.Fatal(err)
		}
		if len(ss) != benchN {
			b.Fatalf("got %d sessions, want %d", len(ss), benchN)
		}
	}
}

func BenchmarkSessionsFiltered(b *testing.B) {
	ctx := context.Background()
	d := benchDB(b)
	filters := []struct {
		name string
		f    store.SessionFilter
		want int
	}{
		{name: "identity", f: store.SessionFilter{Identity: "spiffe://postern.local/user/user007"}, want: benchN / 200},
		{name: "identity glob", f: store.SessionFilter{Identity: "spiffe://postern.local/user/user00*"}, want: benchN / 20},
		// svc1* is i%50 in 10..19; denied is i%6 == 3.
		{name: "service glob and outcome", f: store.SessionFilter{Service: "svc1*", Outcome: "denied"}, want: 333},
		{name: "since, limit 50", f: store.SessionFilter{Since: sessionT0.Add(benchN / 2 * time.Minute), Limit: 50}, want: 50},
	}
	for _, ft := range filters {
		b.Run(ft.name, func(b *testing.B) {
			for b.Loop() {
				ss, err := d.Sessions(ctx, ft.f)
				if err != nil {
					b.Fatal(err)
				}
				if len(ss) != ft.want {
					b.Fatalf("got %d sessions, want %d", len(ss), ft.want)
				}
			}
		})
	}
}
