package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/classify"
	"github.com/postern/postern/protocols/postgres/login"
)

// The tests here run the handler between a real client (pgx) and the real
// PostgreSQL on 127.0.0.1:5432 (trust auth). The upstream stands in for the
// agent: it logs in with pgconn and relays raw bytes, as the agent does.

const pgAddr = "127.0.0.1:5432"

type recorder struct {
	mu     sync.Mutex
	events []protocols.Event
}

func (r *recorder) Record(e protocols.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) queries() []*protocols.PostgresQueryEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*protocols.PostgresQueryEvent
	for _, e := range r.events {
		if q, ok := e.Data.(*protocols.PostgresQueryEvent); ok {
			out = append(out, q)
		}
	}
	return out
}

// readers allows database postgres, and only reads unless writes is set.
type readers struct {
	writes   bool
	readOnly bool
}

func (a readers) Authorize(_ context.Context, r protocols.Request) protocols.Decision {
	pg := r.Postgres
	switch {
	case pg == nil:
		return protocols.Decision{Allow: true, Rule: "conn"}
	case pg.Database != "postgres":
		return protocols.Decision{Rule: protocols.DefaultDeny, Reason: "database " + pg.Database}
	case pg.Startup:
		return protocols.Decision{Allow: true, Rule: "readers", ReadOnly: a.readOnly}
	case pg.TxControl || pg.Class == "read" || a.writes && pg.Class == "write":
		return protocols.Decision{Allow: true, Rule: "readers"}
	}
	return protocols.Decision{Rule: "readers", Reason: "class " + pg.Class + " is not allowed"}
}

// pgOpen logs in to the real server and hands back a stream that speaks
// the agent's side of the wire.
func pgOpen(t testing.TB) func(ctx context.Context, user, database string, params map[string]string) (*Upstream, error) {
	return func(ctx context.Context, user, database string, params map[string]string) (*Upstream, error) {
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=5432 user=%s dbname=%s sslmode=disable", user, database))
		if err != nil {
			return nil, err
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		a, b := tcpPair(t)
		go func() {
			defer b.Close()
			pc, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					login.WriteError(b, &pgproto3.ErrorResponse{Severity: pe.Severity, Code: pe.Code, Message: pe.Message})
				}
				return
			}
			hj, err := pc.Hijack()
			if err != nil {
				return
			}
			defer hj.Conn.Close()
			if login.WriteStartup(b, &login.Startup{Params: hj.ParameterStatuses, PID: hj.PID, SecretKey: hj.SecretKey, TxStatus: hj.TxStatus}) != nil {
				return
			}
			go func() { io.Copy(hj.Conn, b); hj.Conn.(*net.TCPConn).CloseWrite() }()
			io.Copy(b, hj.Conn)
		}()
		return &Upstream{Conn: a, Agent: "test", Cancel: func(ctx context.Context, real CancelKey) error {
			c, err := net.Dial("tcp", pgAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			buf, _ := (&pgproto3.CancelRequest{ProcessID: real.PID, SecretKey: real.Secret}).Encode(nil)
			_, err = c.Write(buf)
			return err
		}}, nil
	}
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a, <-ch
}

type handler struct {
	addr string
	rec  *recorder
	keys *Keys
}

// serve runs the handler on a loopback port (plaintext: TLS is the
// gateway's business) for the test's lifetime.
func serve(t testing.TB, auth protocols.Authorizer, capture int, opts ...func(*Config)) *handler {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &handler{addr: ln.Addr().String(), rec: &recorder{}, keys: NewKeys()}
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	cls := classify.New(100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				cfg := Config{Session: "s-1", Identity: spiffeid.RequireFromString("spiffe://postern.local/user/ann"),
					Service: "pg", Authorizer: auth, Recorder: h.rec, Classifier: cls, Keys: h.keys,
					Open: pgOpen(t), CaptureRows: capture}
				for _, o := range opts {
					o(&cfg)
				}
				Serve(ctx, c, cfg)
			}()
		}
	}()
	return h
}

func (h *handler) connect(t testing.TB, extra string) *pgx.Conn {
	t.Helper()
	host, port, _ := net.SplitHostPort(h.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable %s", host, port, extra))
	if err != nil {
		t.Fatalf("connecting through the handler: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestSimpleAndExtended(t *testing.T) {
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	table := fmt.Sprintf("pgt_%d", time.Now().UnixNano())
	direct, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if _, err := direct.Exec(ctx, "CREATE TABLE "+table+" (id int); INSERT INTO "+table+" VALUES (1),(2)"); err != nil {
		t.Fatal(err)
	}
	defer direct.Exec(ctx, "DROP TABLE "+table)

	cases := map[string]struct {
		sql      string
		args     []any
		simple   bool
		wantCode string
	}{
		"simple read":             {sql: "SELECT count(*) FROM " + table, simple: true},
		"extended read":           {sql: "SELECT count(*) FROM " + table + " WHERE id > $1", args: []any{0}},
		"simple write refused":    {sql: "DELETE FROM " + table, simple: true, wantCode: "42501"},
		"extended write refused":  {sql: "DELETE FROM " + table + " WHERE id = $1", args: []any{1}, wantCode: "42501"},
		"smuggled write":          {sql: "SELECT 1; DELETE FROM " + table, simple: true, wantCode: "42501"},
		"cte write":               {sql: "WITH d AS (DELETE FROM " + table + " RETURNING *) SELECT * FROM d", simple: true, wantCode: "42501"},
		"unparsable":              {sql: "SELEC 1", simple: true, wantCode: "42501"},
		"server error passes":     {sql: "SELECT 1/0", simple: true, wantCode: "22012"},
		"extended server error":   {sql: "SELECT 1/$1::int", args: []any{0}, wantCode: "22012"},
		"prepare execute refused": {sql: "PREPARE p1 AS DELETE FROM " + table + "; EXECUTE p1", simple: true, wantCode: "42501"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.simple {
				_, err = c.Exec(ctx, tc.sql, pgx.QueryExecModeSimpleProtocol)
			} else {
				_, err = c.Exec(ctx, tc.sql, tc.args...)
			}
			if got := pgCode(err); got != tc.wantCode {
				t.Fatalf("got code %q (%v), want %q", got, err, tc.wantCode)
			}
			if tc.wantCode == "42501" && !strings.Contains(err.Error(), `"readers"`) {
				t.Fatalf("refusal %q does not name the rule", err)
			}
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("session not usable after %s: %v", name, err)
			}
		})
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 2 {
		t.Fatalf("table has %d rows (%v), want 2: a refused write got through", n, err)
	}
	var denied, allowed int
	for _, q := range h.rec.queries() {
		switch q.Verdict {
		case protocols.VerdictDeny:
			denied++
			if q.Code != "42501" || q.Rule != "readers" {
				t.Errorf("refusal recorded as %+v", q)
			}
		case protocols.VerdictAllow:
			allowed++
		}
	}
	if denied != 6 {
		t.Errorf("got %d refusals recorded, want 6", denied)
	}
	if allowed < 10 {
		t.Errorf("got %d allowed queries recorded, want at least 10", allowed)
	}
}

func TestRefusalFailsTransaction(t *testing.T) {
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE x (i int)"); pgCode(err) != "42501" {
		t.Fatalf("got %v, want 42501", err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
		t.Fatalf("after a refusal in a transaction: got %v, want 25P02", err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after ROLLBACK: %v", err)
	}
}

func TestPipelineKeepsStep(t *testing.T) {
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	// Three segments, the middle one refused, then one segment whose second
	// query is refused: the server must skip its third, as for its own error.
	p := c.PgConn().StartPipeline(ctx)
	p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT nextval('no_such_seq')", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT 4", nil, nil, nil, nil)
	p.SendQueryParams("DELETE FROM nowhere", nil, nil, nil, nil)
	p.SendQueryParams("SELECT 6", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := p.GetResults()
		if err != nil {
			got = append(got, "error "+pgCode(err))
			continue
		}
		if r == nil {
			break
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				got = append(got, "error "+pgCode(res.Err))
			} else {
				got = append(got, string(res.Rows[0][0]))
			}
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		}
		if len(got) > 20 {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	want := "1 sync error 42501 sync 3 sync 4 error 42501 sync"
	if g := strings.Join(got, " "); g != want {
		t.Fatalf("got %q, want %q", g, want)
	}
	var v int
	if err := c.QueryRow(ctx, "SELECT 7").Scan(&v); err != nil || v != 7 {
		t.Fatalf("after the pipeline: %v %d", err, v)
	}
}

func TestStartupDecisions(t *testing.T) {
	h := serve(t, readers{readOnly: true}, 0)
	host, port, _ := net.SplitHostPort(h.addr)
	ctx := context.Background()
	cases := map[string]struct {
		dsn      string
		wantCode string
	}{
		"database refused":       {dsn: "dbname=template1", wantCode: "28000"},
		"read-only lifted":       {dsn: "dbname=postgres default_transaction_read_only=off", wantCode: "28000"},
		"options lift":           {dsn: "dbname=postgres options='-c default_transaction_read_only=off'", wantCode: "28000"},
		"unknown option":         {dsn: "dbname=postgres options='-P'", wantCode: "28000"},
		"harmless option":        {dsn: "dbname=postgres options='-c statement_timeout=5s'"},
		"harmless param":         {dsn: "dbname=postgres application_name=t1"},
		"unsafe client encoding": {dsn: "dbname=postgres client_encoding=SJIS", wantCode: "28000"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres sslmode=disable %s", host, port, tc.dsn))
			if got := pgCode(err); got != tc.wantCode {
				t.Fatalf("got %q (%v), want %q", got, err, tc.wantCode)
			}
			if err == nil {
				c.Close(ctx)
			}
		})
	}
	c := h.connect(t, "")
	var ro string
	if err := c.QueryRow(ctx, "SHOW default_transaction_read_only").Scan(&ro); err != nil || ro != "on" {
		t.Fatalf("read-only session: got %q (%v), want on", ro, err)
	}
}

func TestCancel(t *testing.T) {
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
	if pgCode(err) != "57014" && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a cancelled query", err)
	}
	// pgx closes the connection after a context cancel; the server must
	// have seen the cancel: the recording says 57014.
	found := false
	for range 50 {
		for _, q := range h.rec.queries() {
			if strings.Contains(q.SQL, "pg_sleep") && q.Code == "57014" {
				found = true
			}
		}
		if found {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !found {
		t.Fatalf("no query recorded as cancelled (57014): %+v", h.rec.queries())
	}
	if known, _ := h.keys.Cancel(context.Background(), CancelKey{PID: 1, Secret: []byte{1, 2, 3, 4}}); known {
		t.Fatal("a guessed key was honoured")
	}
}

func TestLargeResultAndCapture(t *testing.T) {
	h := serve(t, readers{}, 3)
	c := h.connect(t, "")
	ctx := context.Background()
	rows, err := c.Query(ctx, "SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g")
	if err != nil {
		t.Fatal(err)
	}
	var sum, n int64
	for rows.Next() {
		var g int64
		var s string
		if err := rows.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		sum += g
		n++
	}
	if rows.Err() != nil || n != 200000 || sum != 200000*200001/2 {
		t.Fatalf("got %d rows summing to %d (%v)", n, sum, rows.Err())
	}
	var ev *protocols.PostgresQueryEvent
	for _, q := range h.rec.queries() {
		if strings.Contains(q.SQL, "generate_series") {
			ev = q
		}
	}
	if ev == nil || ev.Rows != 200000 || len(ev.Result) != 3 || len(ev.Columns) != 2 {
		t.Fatalf("recorded %+v, want 200000 rows with 3 captured", ev)
	}
}

func TestCopyBothWays(t *testing.T) {
	h := serve(t, readers{writes: true}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	table := fmt.Sprintf("pgcopy_%d", time.Now().UnixNano())
	if _, err := c.Exec(ctx, "CREATE TABLE "+table+" (id int, name text)"); pgCode(err) != "42501" {
		t.Fatalf("ddl: got %v, want 42501", err)
	}
	direct, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if _, err := direct.Exec(ctx, "CREATE TABLE "+table+" (id int, name text)"); err != nil {
		t.Fatal(err)
	}
	defer direct.Exec(ctx, "DROP TABLE "+table)
	src := make([][]any, 50000)
	for i := range src {
		src[i] = []any{i, fmt.Sprintf("name-%d", i)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{table}, []string{"id", "name"}, pgx.CopyFromRows(src))
	if err != nil || n != int64(len(src)) {
		t.Fatalf("copy from: %d, %v", n, err)
	}
	var buf strings.Builder
	tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY "+table+" TO STDOUT")
	if err != nil || tag.RowsAffected() != int64(len(src)) || strings.Count(buf.String(), "\n") != len(src) {
		t.Fatalf("copy to: %v, %v, %d lines", tag, err, strings.Count(buf.String(), "\n"))
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestBadMessages: an oversized or malformed message ends that session with
// a FATAL naming the problem; another session goes on.
func TestBadMessages(t *testing.T) {
	h := serve(t, readers{}, 0, func(c *Config) { c.MaxMessage = 4096 })
	other := h.connect(t, "")
	ctx := context.Background()
	cases := map[string]struct {
		send         []byte
		wantSeverity string
		wantCode     string
	}{
		"oversized query": {send: mustEncode(t, &pgproto3.Query{String: "SELECT '" + strings.Repeat("x", 5000) + "'"}), wantSeverity: "FATAL", wantCode: "54000"},
		"unknown type":    {send: []byte{'z', 0, 0, 0, 4}, wantSeverity: "FATAL", wantCode: "08P01"},
		// Like the server, a message that does not decode is an ERROR and
		// the session goes on.
		"bad parse":      {send: append([]byte{'P', 0, 0, 0, 6, 'a', 0}, mustEncode(t, &pgproto3.Sync{})...), wantSeverity: "ERROR", wantCode: "08P01"},
		"nul in a query": {send: []byte{'Q', 0, 0, 0, 8, 'a', 0, 'b', 0}, wantSeverity: "ERROR", wantCode: "08P01"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := h.connect(t, "")
			conn := c.PgConn().Conn()
			if _, err := conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			fe := pgproto3.NewFrontend(conn, conn)
			for {
				m, err := fe.Receive()
				if err != nil {
					t.Fatalf("no FATAL before the end: %v", err)
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					if e.Severity != tc.wantSeverity || e.Code != tc.wantCode {
						t.Fatalf("got %s %s %q, want %s %s", e.Severity, e.Code, e.Message, tc.wantSeverity, tc.wantCode)
					}
					if e.Severity == "ERROR" {
						if m, err := fe.Receive(); err != nil {
							t.Fatalf("after the error: %v", err)
						} else if _, ok := m.(*pgproto3.ReadyForQuery); !ok {
							t.Fatalf("after the error got %T, want ReadyForQuery", m)
						}
						if err := c.Ping(ctx); err != nil {
							t.Fatalf("session not usable after a malformed message: %v", err)
						}
					}
					break
				}
			}
			var v int
			if err := other.QueryRow(ctx, "SELECT 5").Scan(&v); err != nil || v != 5 {
				t.Fatalf("another session broke: %v", err)
			}
		})
	}
}

func mustEncode(t testing.TB, m pgproto3.FrontendMessage) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// heapPeak samples the heap in use until stop is closed and returns the
// peak above the starting point.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		base, peak := m.HeapInuse, m.HeapInuse
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				out <- peak - base
				return
			case <-t.C:
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()
	return out
}

// TestLargeResultsFlatMemory streams 5M rows through the handler, as
// rows and as COPY, and checks the heap does not grow with them.
func TestLargeResultsFlatMemory(t *testing.T) {
	const rows = 5_000_000
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	stop := make(chan struct{})
	peak := heapPeak(stop)
	r, err := c.Query(ctx, fmt.Sprintf("SELECT g, 'row number ' || g FROM generate_series(1, %d) g", rows))
	if err != nil {
		t.Fatal(err)
	}
	var n, sum int64
	for r.Next() {
		var g int64
		if err := r.Scan(&g, nil); err != nil {
			t.Fatal(err)
		}
		n, sum = n+1, sum+g
	}
	if r.Err() != nil || n != rows || sum != rows*(rows+1)/2 {
		t.Fatalf("got %d rows summing to %d: %v", n, sum, r.Err())
	}
	var cw countWriter
	tag, err := c.PgConn().CopyTo(ctx, &cw, fmt.Sprintf("COPY (SELECT g, md5(g::text) FROM generate_series(1, %d) g) TO STDOUT", rows))
	if err != nil || tag.RowsAffected() != rows {
		t.Fatalf("copy: %v %v", tag, err)
	}
	close(stop)
	grew := <-peak
	t.Logf("heap peak above start: %d KiB for %d rows and %d bytes of COPY", grew>>10, rows, cw.n)
	if grew > 48<<20 {
		t.Fatalf("heap grew by %d MiB while streaming %d rows and %d bytes of COPY: results are being held", grew>>20, rows, cw.n)
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// TestSQLPrepareThroughExtended: a statement prepared with SQL PREPARE sent
// through the extended protocol can be bound by name, and is decided as
// what it prepared.
func TestSQLPrepareThroughExtended(t *testing.T) {
	h := serve(t, readers{}, 0)
	c := h.connect(t, "")
	ctx := context.Background()
	if _, err := c.Exec(ctx, "PREPARE sq1 AS SELECT 40 + $1::int"); err != nil {
		t.Fatal(err)
	}
	p := c.PgConn().ExecPrepared(ctx, "sq1", [][]byte{[]byte("2")}, nil, nil).Read()
	if p.Err != nil || len(p.Rows) != 1 || string(p.Rows[0][0]) != "42" {
		t.Fatalf("executing sq1 by name: %v %v", p.Err, p.Rows)
	}
	if _, err := c.Exec(ctx, "PREPARE sq2 AS DELETE FROM nowhere"); pgCode(err) != "42501" {
		t.Fatalf("preparing a write: got %v, want 42501", err)
	}
}

// TestNegotiateProtocolVersion: a client asking for protocol 3.2 and a
// _pq_ option is told 3.0, with the option declined, and then logs in.
func TestNegotiateProtocolVersion(t *testing.T) {
	h := serve(t, readers{}, 0)
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32,
		Parameters: map[string]string{"user": "postgres", "database": "postgres", "_pq_.test_option": "1"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	npv, ok := m.(*pgproto3.NegotiateProtocolVersion)
	if !ok || npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test_option" {
		t.Fatalf("got %#v, want NegotiateProtocolVersion 3.0 declining _pq_.test_option", m)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after negotiation: %v", err)
		}
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("login failed: %#v", m)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			return
		}
	}
}

// TestUnsafeServerSettings: when the server reads string literals
// differently from the parser (here a role whose default turns
// standard_conforming_strings off), every statement but transaction control
// counts as admin.
func TestUnsafeServerSettings(t *testing.T) {
	ctx := context.Background()
	direct, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	role := fmt.Sprintf("postern_scs_%d", time.Now().UnixNano())
	for _, q := range []string{"CREATE ROLE " + role + " LOGIN", "ALTER ROLE " + role + " SET standard_conforming_strings = off"} {
		if _, err := direct.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	defer direct.Exec(ctx, "DROP ROLE "+role)
	h := serve(t, readers{}, 0)
	host, port, _ := net.SplitHostPort(h.addr)
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=disable", host, port, role))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "SELECT 'a\\'; SELECT 1", pgx.QueryExecModeSimpleProtocol)
	if pgCode(err) != "42501" || !strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Fatalf("got %v, want 42501 naming standard_conforming_strings", err)
	}
	if _, err := c.Exec(ctx, "BEGIN", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("transaction control: %v", err)
	}
	c.Exec(ctx, "ROLLBACK", pgx.QueryExecModeSimpleProtocol)
}
