package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/protocols"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func str(s string) *string { return &s }

// event makes an event of session id at t0+ms.
func event(id string, ms int, typ protocols.EventType, data any) protocols.Event {
	return protocols.Event{Session: id, Time: t0.Add(time.Duration(ms) * time.Millisecond), Type: typ, Data: data}
}

// record writes a recording of evs with a fresh key and returns its path
// (sealed when evs end the session, open otherwise).
func record(t testing.TB, evs ...protocols.Event) string {
	t.Helper()
	key, err := audit.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{Key: key, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := audit.Find(dir, evs[0].Session)
	if err != nil {
		t.Fatal(err)
	}
	return f.Path
}

func pgSession() []protocols.Event {
	const id = "pg-1"
	return []protocols.Event{
		event(id, 0, protocols.SessionStarted, &protocols.SessionStart{Identity: "spiffe://postern.local/user/ann",
			Groups: []string{"analysts"}, Source: "127.0.0.1:40000", Service: "pg", Protocol: protocols.Postgres,
			Agent: "db1", Transport: "quic", Database: "app", User: "readonly"}),
		event(id, 10, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT id, name\nFROM users",
			Protocol: "simple", Class: "read", Tags: []string{"SELECT"}, Verdict: protocols.VerdictAllow, Rule: "analysts-read",
			Completed: []string{"SELECT 2"}, Rows: 2, Duration: 1.25,
			Columns: []string{"id", "name"}, Result: [][]*string{{str("1"), str("ann")}, {str("22"), nil}}}),
		event(id, 20, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "SELECT * FROM orders WHERE id = $1 AND note = $2",
			Params: []*string{str("42"), str("it's")}, Protocol: "extended", Prepared: "s1", Class: "read",
			Verdict: protocols.VerdictAllow, Rule: "analysts-read", Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.5}),
		event(id, 30, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: "default-deny", Reason: "write statements are not allowed"}),
		event(id, 30, protocols.PostgresQuery, &protocols.PostgresQueryEvent{SQL: "DELETE FROM users;", Protocol: "simple",
			Class: "write", Verdict: protocols.VerdictDeny, Rule: "default-deny", Reason: "write statements are not allowed",
			Code: "42501", Error: `permission denied: rule "default-deny"`, Duration: 0.1}),
		event(id, 1530, protocols.SessionEnded, &protocols.SessionEnd{Outcome: protocols.OutcomeOK, BytesIn: 300, BytesOut: 900, Duration: 1530}),
	}
}

func TestPlayPostgresTranscript(t *testing.T) {
	path := record(t, pgSession()...)
	var out bytes.Buffer
	if err := Play(context.Background(), path, &out, Options{}); err != nil {
		t.Fatal(err)
	}
	want := `[+0.000s] session pg-1: spiffe://postern.local/user/ann [analysts] from 127.0.0.1:40000 to pg (postgres, agent db1, over quic), database app as readonly
[+0.010s] app=> SELECT id, name
          app-> FROM users;
           id | name
          ----+------
            1 | ann
           22 |
          (2 rows)
          -- rule "analysts-read", 1.250 ms
[+0.020s] app=> SELECT * FROM orders WHERE id = $1 AND note = $2;
          -- prepared statement "s1"
          -- $1 = '42'
          -- $2 = 'it''s'
          SELECT 1
          -- rule "analysts-read", 0.500 ms
[+0.030s] DENIED by rule "default-deny": write statements are not allowed
[+0.030s] app=> DELETE FROM users;
          ERROR:  permission denied: rule "default-deny"
          -- SQLSTATE 42501, rule "default-deny", 0.100 ms
[+1.530s] session ended: ok, 300 bytes in, 900 bytes out, 1.53s
[+1.530s] recording sealed (key ` + sealKey(t, path) + `)
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// sealKey returns the key id in the seal of the recording at path.
func sealKey(t *testing.T, path string) string {
	var key string
	audit.Read(path, func(r audit.Record) error {
		if r.Type == audit.SealType {
			var d audit.SealData
			json.Unmarshal(r.Data, &d)
			key = d.Key
		}
		return nil
	})
	return key
}

func TestPlayProtocols(t *testing.T) {
	start := func(id, proto string) protocols.Event {
		return event(id, 0, protocols.SessionStarted, &protocols.SessionStart{Identity: "spiffe://postern.local/user/ann",
			Source: "127.0.0.1:1", Service: "svc", Protocol: proto, Agent: "a1"})
	}
	tests := map[string]struct {
		evs  []protocols.Event
		want []string
		not  []string
	}{
		"http": {
			evs: []protocols.Event{start("h", protocols.HTTP),
				event("h", 5, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/v1/orders", Query: "limit=5",
					Identity: "spiffe://postern.local/user/ann", Auth: protocols.AuthSVID, Verdict: protocols.VerdictAllow,
					Rule: "orders", Status: 200, Duration: 12}),
				event("h", 9, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "DELETE", Path: "/v1/orders/1",
					Identity: "spiffe://postern.local/workload/ci", Auth: protocols.AuthAPIKey, Verdict: protocols.VerdictDeny,
					Rule: "default-deny", Reason: "no rule allows it", Status: 403, Duration: 0.3}),
			},
			want: []string{
				`[+0.005s] → GET /v1/orders?limit=5  200  12ms  (rule "orders")`,
				`[+0.009s] → DELETE /v1/orders/1  403  0.30ms  as spiffe://postern.local/workload/ci  (apikey)  DENIED by rule "default-deny": no rule allows it`,
				"(the recording ends here, without the session's end",
			},
		},
		"grpc": {
			evs: []protocols.Event{start("g", protocols.GRPC),
				event("g", 3, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.v1.Orders/Get", Verdict: protocols.VerdictAllow,
					Status: 0, Duration: 3}),
				event("g", 4, protocols.GRPCCalled, &protocols.GRPCCallEvent{Method: "/orders.v1.Orders/Delete", Verdict: protocols.VerdictDeny,
					Rule: "default-deny", Status: 7, Message: "denied by default-deny", Duration: 0}),
			},
			want: []string{
				"[+0.003s] → /orders.v1.Orders/Get  OK (0)  3.0ms",
				`[+0.004s] → /orders.v1.Orders/Delete  PermissionDenied (7): denied by default-deny  0ms  DENIED by rule "default-deny"`,
			},
		},
		"tcp": {
			evs: []protocols.Event{start("t", protocols.TCP),
				event("t", 1234, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ClientToService, Bytes: 512}),
				event("t", 1300, protocols.TCPData, &protocols.TCPDataEvent{Direction: protocols.ServiceToClient, Bytes: 1024}),
				event("t", 2000, protocols.SessionEnded, &protocols.SessionEnd{Outcome: protocols.OutcomeOK, BytesIn: 512, BytesOut: 1024, Duration: 2000}),
			},
			want: []string{
				"[+1.234s] client → service 512 bytes",
				"[+1.300s] service → client 1024 bytes",
				"[+2.000s] session ended: ok, 512 bytes in, 1024 bytes out, 2s",
			},
			not: []string{"ends here"},
		},
		"denied": {
			evs: []protocols.Event{
				event("d", 0, protocols.SessionStarted, &protocols.SessionStart{Source: "10.0.0.9:5000", Service: "pg"}),
				event("d", 1, protocols.AuthzDenied, &protocols.AuthzDeny{Rule: "default-deny", Reason: "no rule admits the identity"}),
				event("d", 2, protocols.SessionEnded, &protocols.SessionEnd{Outcome: protocols.OutcomeDenied, Error: "refused", Duration: 2}),
			},
			want: []string{
				"[+0.000s] session d: unauthenticated client from 10.0.0.9:5000 to pg",
				`[+0.001s] DENIED by rule "default-deny": no rule admits the identity`,
				"[+0.002s] session ended: denied, 0 bytes in, 0 bytes out, 2.0ms; error: refused",
			},
		},
		"unknown type": {
			evs: []protocols.Event{start("u", "ssh"),
				event("u", 7, "ssh.command", map[string]string{"command": "ls -l"}),
			},
			want: []string{`[+0.007s] ssh.command {"command":"ls -l"}`},
		},
		"escape sequences": {
			evs: []protocols.Event{start("e", protocols.HTTP),
				event("e", 1, protocols.HTTPRequested, &protocols.HTTPRequestEvent{Method: "GET", Path: "/\x1b[2Jx\u202e", Status: 404}),
			},
			want: []string{`→ GET /\x1b[2Jx\u202e  404`},
			not:  []string{"\x1b", "\u202e"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := record(t, tc.evs...)
			var out bytes.Buffer
			if err := Play(context.Background(), path, &out, Options{Format: FormatText}); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("got\n%s\nwant a line with %q", out.String(), w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out.String(), w) {
					t.Errorf("got\n%s\nwant no %q", out.String(), w)
				}
			}
		})
	}
}

func TestPlayJSON(t *testing.T) {
	evs := pgSession()
	path := record(t, evs...)
	var out bytes.Buffer
	if err := Play(context.Background(), path, &out, Options{Format: FormatJSON}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(evs)+1 {
		t.Fatalf("got %d lines, want %d (the events and the seal):\n%s", len(lines), len(evs)+1, out.String())
	}
	for i, l := range lines {
		var e struct {
			Seq    *int64         `json:"seq"`
			Time   time.Time      `json:"time"`
			Offset *float64       `json:"offset_ms"`
			Type   string         `json:"type"`
			Data   map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d: %v in %s", i, err, l)
		}
		wantType, wantTime := audit.SealType, evs[len(evs)-1].Time
		if i < len(evs) {
			wantType, wantTime = string(evs[i].Type), evs[i].Time
		}
		wantOffset := float64(wantTime.Sub(t0).Microseconds()) / 1e3
		if e.Seq == nil || *e.Seq != int64(i) || e.Type != wantType || !e.Time.Equal(wantTime) ||
			e.Offset == nil || *e.Offset != wantOffset || e.Data == nil {
			t.Errorf("line %d: got %s, want seq %d, type %s, offset_ms %v and data", i, l, i, wantType, wantOffset)
		}
	}
	if !strings.Contains(lines[1], `"columns":["id","name"]`) {
		t.Errorf("query line %s does not carry the captured columns", lines[1])
	}
}

func TestPlayTiming(t *testing.T) {
	path := record(t, pgSession()...)
	// Gaps between records: 10, 10, 10, 0, 1500 ms, then the seal at once.
	tests := map[string]struct {
		speed float64
		want  []time.Duration
	}{
		"original": {1, []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 1500 * time.Millisecond}},
		"twice":    {2, []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 750 * time.Millisecond}},
		"no wait":  {0, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []time.Duration
			var out bytes.Buffer
			err := Play(context.Background(), path, &out, Options{Speed: tc.speed, Format: FormatJSON,
				Sleep: func(ctx context.Context, d time.Duration) error {
					got = append(got, d)
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got sleeps %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got sleeps %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestPlayCancel(t *testing.T) {
	path := record(t, pgSession()...)
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	errc := make(chan error, 1)
	go func() { errc <- Play(ctx, path, &out, Options{Speed: 0.001}) }() // ten seconds between the first records
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Play did not stop when its context was cancelled")
	}
	if !strings.Contains(out.String(), "session pg-1") || strings.Contains(out.String(), "DELETE") {
		t.Errorf("got\n%s\nwant the header only", out.String())
	}
}

// v1Recording writes a version 1 recording (plain JSON lines) of evs under
// a temporary directory, passing each line through edit first (nil drops
// it), and returns its path.
func v1Recording(t *testing.T, evs []protocols.Event, edit func(i int, line []byte) []byte) string {
	t.Helper()
	var (
		buf  bytes.Buffer
		prev string
	)
	for i, e := range evs {
		data, err := json.Marshal(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		line, err := json.Marshal(audit.Record{V: 1, Seq: int64(i), Time: e.Time, Session: e.Session, Type: e.Type, Data: data, Prev: prev})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
		if l := edit(i, line); l != nil { // nil: the record is removed
			buf.Write(l)
			buf.WriteByte('\n')
		}
	}
	path := filepath.Join(t.TempDir(), evs[0].Session+audit.ExtV1)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPlayBroken(t *testing.T) {
	evs := pgSession()
	tests := map[string]struct {
		edit    func(i int, line []byte) []byte
		seq     int
		played  []string // present in the output
		notSeen []string // absent: at or past the break
	}{
		"changed record": {
			edit: func(i int, line []byte) []byte {
				if i == 2 {
					return bytes.Replace(line, []byte(`42`), []byte(`43`), 1)
				}
				return line
			},
			seq:     2,
			played:  []string{"session pg-1", "FROM users;"},
			notSeen: []string{"orders", "DELETE"},
		},
		"removed record": {
			edit: func(i int, line []byte) []byte {
				if i == 3 {
					return nil
				}
				return line
			},
			seq:     3,
			played:  []string{"FROM users;", "-- $1 = '42'"},
			notSeen: []string{"DENIED", "DELETE"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := v1Recording(t, evs, tc.edit)
			var out bytes.Buffer
			err := Play(context.Background(), path, &out, Options{})
			var ce *audit.ChainError
			if !errors.As(err, &ce) || ce.Seq != tc.seq || !strings.Contains(err.Error(), "pg-1") {
				t.Fatalf("got %v, want a ChainError at record %d naming the session", err, tc.seq)
			}
			for _, w := range tc.played {
				if !strings.Contains(out.String(), w) {
					t.Errorf("got\n%s\nwant %q played before the break", out.String(), w)
				}
			}
			for _, w := range tc.notSeen {
				if strings.Contains(out.String(), w) {
					t.Errorf("got\n%s\nwant nothing of %q, at or past the break", out.String(), w)
				}
			}
		})
	}

	t.Run("cut short", func(t *testing.T) {
		path := record(t, pgSession()...)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b[:len(b)-8], 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = Play(context.Background(), path, &out, Options{Format: FormatJSON})
		var ce *audit.ChainError
		if !errors.As(err, &ce) {
			t.Fatalf("got %v, want a ChainError", err)
		}
		if strings.Contains(out.String(), audit.SealType) {
			t.Errorf("got\n%s\nwant the records before the break only", out.String())
		}
	})
}

func TestPlayOptions(t *testing.T) {
	path := record(t, pgSession()...)
	tests := map[string]struct {
		opts Options
		want string
	}{
		"negative speed": {Options{Speed: -1}, "speed"},
		"bad format":     {Options{Format: "yaml"}, `unknown format "yaml"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Play(context.Background(), path, &bytes.Buffer{}, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if err := Play(context.Background(), filepath.Join(t.TempDir(), "nope.jsonl.zst"), &bytes.Buffer{}, Options{}); err == nil {
		t.Fatal("a missing recording played")
	}
}

func TestTable(t *testing.T) {
	tests := map[string]struct {
		cols []string
		rows [][]*string
		n    int64
		want string
	}{
		"mixed": {
			cols: []string{"id", "name"},
			rows: [][]*string{{str("1"), str("ann")}, {str("100"), str("bob\nby")}},
			n:    2,
			want: " id  |  name\n-----+---------\n   1 | ann\n 100 | bob\\nby\n(2 rows)",
		},
		"one row, more returned": {
			cols: []string{"a"},
			rows: [][]*string{{nil}},
			n:    5,
			want: " a\n---\n\n(5 rows, first 1 captured)",
		},
		"no rows": {
			cols: []string{"count"},
			want: " count\n-------\n(0 rows)",
		},
		"single": {
			cols: []string{"x"},
			rows: [][]*string{{str("é")}},
			n:    1,
			want: " x\n---\n é\n(1 row)",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := strings.Join(Table(tc.cols, tc.rows, tc.n), "\n"); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	for ms, want := range map[float64]string{0: "0ms", 0.42: "0.42ms", 3: "3.0ms", 12.4: "12ms", 1234: "1.234s", 61000: "1m1s"} {
		if got := Duration(ms); got != want {
			t.Errorf("Duration(%v): got %q, want %q", ms, got, want)
		}
	}
}

// TestPlayVerifiesSeal: with keys, Play checks the seal after playing the
// session's end; an unsealed recording plays and says so.
func TestPlayVerifiesSeal(t *testing.T) {
	key, err := audit.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := audit.NewKey()
	trust := func(k *audit.Key) audit.Keys {
		ks := audit.Keys{}
		if err := ks.Add(k.Public()); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	write := func(evs []protocols.Event) string {
		dir := t.TempDir()
		l, err := audit.Open(dir, audit.Options{Key: key, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			l.Record(e)
		}
		l.Close()
		f, err := audit.Find(dir, evs[0].Session)
		if err != nil {
			t.Fatal(err)
		}
		return f.Path
	}
	evs := pgSession()
	sealed, open := write(evs), write(evs[:len(evs)-1])
	tests := map[string]struct {
		path    string
		keys    audit.Keys
		wantErr string
		want    string
	}{
		"sealed, trusted key":    {path: sealed, keys: trust(key), want: "session ended"},
		"sealed, another key":    {path: sealed, keys: trust(other), wantErr: "not trusted", want: "session ended"},
		"unsealed":               {path: open, keys: trust(key), want: "not sealed"},
		"unsealed, no key given": {path: open, want: "DELETE FROM users"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := Play(context.Background(), tt.path, &out, Options{Keys: tt.keys})
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want error %q", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, out.String())
			}
		})
	}
}
