package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/connect"
	"github.com/postern/postern/protocols"
)

// TestPostgresProtocols: what libpq and pgx clients do, through the gateway
// and an agent, over each tunnel transport: the simple protocol from psql
// (one and several statements, \copy both ways), the extended protocol from
// pgx (parameters, prepared statements, batches, pipelines, COPY both ways,
// LISTEN/NOTIFY, a large streamed result), cancel requests, and the
// server-side read-only mode of a read-only identity.
func TestPostgresProtocols(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			e := startPG(t, transport)
			for _, st := range []struct {
				name string
				run  func(t *testing.T, e *pgEnv)
			}{
				{"psql simple protocol", testPsqlSimple},
				{"pgx extended protocol", testPgxExtended},
				{"pgx pipeline", testPgxPipeline},
				{"pgx copy", testPgxCopy},
				{"listen notify", testListenNotify},
				{"large result", testLargeResult},
				{"cancel", testCancel},
				{"psql cancel", testPsqlCancel},
				{"read-only session", testReadOnlyFlag},
				{"edge cases", testEdgeCases},
			} {
				t.Run(st.name, func(t *testing.T) { st.run(t, e) })
			}
		})
	}
}

func testPsqlSimple(t *testing.T, e *pgEnv) {
	dir := identityDir(t, e.g, e.writer)
	conninfo := libpqTLS(e.g.addr(), dir, "postgres", "test")
	tbl := pgTable(t, "psql")

	tests := map[string]struct {
		args []string
		want string
	}{
		"one statement":    {[]string{"-c", "SELECT 'through '||'postern'"}, "through postern"},
		"two statements":   {[]string{"-c", "SELECT 1; SELECT 2"}, "1\n2"},
		"write then read":  {[]string{"-q", "-c", "INSERT INTO " + tbl + " VALUES (9,'nine'); SELECT v FROM " + tbl + " WHERE id = 9"}, "nine"},
		"semicolon quoted": {[]string{"-c", "SELECT ';' || $$;$$"}, ";;"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := psql(t, dir, conninfo, tc.args...)
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, got)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("recorded", func(t *testing.T) {
		q := pgQuery(t, e.g, writerID, "SELECT 1; SELECT 2")
		if q == nil || q.Protocol != "simple" || q.Verdict != protocols.VerdictAllow || q.Class != "read" ||
			strings.Join(q.Tags, ",") != "SELECT,SELECT" || strings.Join(q.Completed, ",") != "SELECT 1,SELECT 1" || q.Rows != 2 {
			t.Errorf("got recorded %+v, want protocol simple, verdict allow, class read, tags and completed of two SELECTs, rows 2", q)
		}
	})

	t.Run(`\copy both ways`, func(t *testing.T) {
		var in strings.Builder
		for i := 100; i < 2100; i++ {
			fmt.Fprintf(&in, "%d,row %d with a \"quote\" and a comma\\, here\n", i, i)
		}
		inFile := filepath.Join(dir, "in.csv")
		if err := os.WriteFile(inFile, []byte(in.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := psql(t, dir, conninfo,
			"-c", `\copy `+tbl+` FROM 'in.csv' WITH (FORMAT text, DELIMITER ',')`,
			"-c", `\copy (SELECT * FROM `+tbl+` WHERE id >= 100 ORDER BY id) TO 'out.csv' WITH (FORMAT text, DELIMITER ',')`)
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, got)
		}
		if !strings.Contains(got, "COPY 2000") {
			t.Errorf("got psql output %q, want COPY 2000", got)
		}
		out, err := os.ReadFile(filepath.Join(dir, "out.csv"))
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != in.String() {
			t.Fatalf("copied out %d bytes that differ from the %d copied in", len(out), in.Len())
		}
		su := superuser(t, "test")
		if n := pgString(t, su, "SELECT count(*)::text FROM "+tbl); n != "2004" {
			t.Fatalf("got %s rows in the table, want 2004", n)
		}
	})
}

func testPgxExtended(t *testing.T, e *pgEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	tbl := pgTable(t, "ext")

	var sum int
	var s string
	if err := c.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", 40, 2, "it's a $1 'param'").Scan(&sum, &s); err != nil {
		t.Fatal(err)
	}
	if sum != 42 || s != "it's a $1 'param'" {
		t.Fatalf("got %d, %q; want 42 and the text param back", sum, s)
	}

	if _, err := c.Prepare(ctx, "double", "SELECT $1::int * 2"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var n int
		if err := c.QueryRow(ctx, "double", i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("prepared statement with %d: got %d, %v; want %d", i, n, err, 2*i)
		}
	}

	// NULL, bytea and a binary-format parameter survive the relay.
	var isNull bool
	var blob []byte
	if err := c.QueryRow(ctx, "SELECT $1::text IS NULL, $2::bytea", nil, []byte{0, 1, 2, 255}).Scan(&isNull, &blob); err != nil {
		t.Fatal(err)
	}
	if !isNull || !bytes.Equal(blob, []byte{0, 1, 2, 255}) {
		t.Fatalf("got %v, %x; want true, 000102ff", isNull, blob)
	}

	b := &pgx.Batch{}
	for i := 10; i < 15; i++ {
		b.Queue("INSERT INTO "+tbl+" VALUES ($1, $2)", i, fmt.Sprint("batch ", i))
	}
	b.Queue("SELECT count(*) FROM " + tbl)
	b.Queue("UPDATE "+tbl+" SET v = v || '!' WHERE id >= $1", 10)
	br := c.SendBatch(ctx, b)
	for i := range 5 {
		if tag, err := br.Exec(); err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("batch insert %d: got %q, %v", i, tag, err)
		}
	}
	var n int
	if err := br.QueryRow().Scan(&n); err != nil || n != 8 {
		t.Fatalf("batch count: got %d, %v; want 8", n, err)
	}
	if tag, err := br.Exec(); err != nil || tag.RowsAffected() != 5 {
		t.Fatalf("batch update: got %q, %v; want 5 rows", tag, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}

	// A server error in a batch leaves the connection in step.
	b = &pgx.Batch{}
	b.Queue("SELECT 1")
	b.Queue("SELECT 1/0")
	b.Queue("SELECT 3")
	br = c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Exec(); pgCode(err) != "22012" {
		t.Fatalf("got %v, want division by zero (22012)", err)
	}
	br.Close()
	wantUsable(t, c, "a failed batch")

	// The audit has the parameters of the extended protocol.
	c.Close(ctx)
	q := pgQuery(t, e.g, writerID, "SELECT $1::int + $2::int*")
	if q == nil || q.Protocol != "extended" || q.Verdict != protocols.VerdictAllow || len(q.Params) != 3 ||
		q.Params[0] == nil || (*q.Params[0] != "40" && *q.Params[0] != `\x00000028`) {
		t.Errorf("got recorded query %+v, want protocol extended, params [40 2 …] and verdict allow", q)
	}
}

func testPgxPipeline(t *testing.T, e *pgEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	p := c.PgConn().StartPipeline(ctx)
	p.SendQueryParams("SELECT $1::int", [][]byte{[]byte("1")}, nil, nil, nil)
	p.SendPrepare("pp", "SELECT $1::int * 2", nil)
	p.SendQueryPrepared("pp", [][]byte{[]byte("21")}, nil, nil)
	p.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
	p.SendQueryParams("SELECT 'skipped'", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("SELECT 'after sync'", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	got := pipelineResults(t, p)
	want := []string{"1", "prepared", "42", "error 22012", "sync", "after sync", "sync"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got pipeline results %q, want %q", got, want)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantUsable(t, c, "a pipeline")
}

// pipelineResults reads a pipeline's results until it has none, each as the
// first value of a result, "prepared", "sync" or "error CODE".
func pipelineResults(t testing.TB, p *pgconn.Pipeline) []string {
	t.Helper()
	var got []string
	for {
		r, err := p.GetResults()
		if err != nil {
			got = append(got, "error "+pgCode(err))
			if pgCode(err) == "" {
				t.Fatalf("pipeline: %v", err)
			}
			continue
		}
		switch r := r.(type) {
		case nil:
			return got
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				got = append(got, "error "+pgCode(res.Err))
			} else if len(res.Rows) == 1 && len(res.Rows[0]) == 1 {
				got = append(got, string(res.Rows[0][0]))
			} else {
				got = append(got, fmt.Sprintf("%d rows", len(res.Rows)))
			}
		case *pgconn.StatementDescription:
			got = append(got, "prepared")
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		default:
			got = append(got, fmt.Sprintf("%T", r))
		}
	}
}

func testPgxCopy(t *testing.T, e *pgEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	tbl := pgTable(t, "copy")
	const n = 20000
	rows := make([][]any, n)
	var want strings.Builder
	want.WriteString("1\ta\n2\tb\n3\tc\n")
	for i := range rows {
		id := 10 + i
		v := fmt.Sprintf("copied row %d %s", id, strings.Repeat("z", i%50))
		rows[i] = []any{id, v}
		fmt.Fprintf(&want, "%d\t%s\n", id, v)
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{tbl}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	if err != nil || copied != n {
		t.Fatalf("CopyFrom: got %d, %v; want %d", copied, err, n)
	}
	var out bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT * FROM "+tbl+" ORDER BY id) TO STDOUT")
	if err != nil || tag.RowsAffected() != n+3 {
		t.Fatalf("CopyTo: got %q, %v; want %d rows", tag, err, n+3)
	}
	if out.String() != want.String() {
		t.Fatalf("COPY TO STDOUT gave %d bytes that differ from the %d expected", out.Len(), want.Len())
	}
	// COPY FROM STDIN in text through the simple protocol, and an error in
	// the middle of a COPY.
	if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader("90000\tfrom text\n"), "COPY "+tbl+" FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("90001\tok\nnot a number\tbad\n"), "COPY "+tbl+" FROM STDIN")
	wantPgError(t, "COPY with a bad row", err, "22P02")
	wantUsable(t, c, "a failed COPY")
	if got := pgString(t, c, "SELECT count(*)::text FROM "+tbl); got != fmt.Sprint(n+4) {
		t.Fatalf("got %s rows, want %d", got, n+4)
	}
	c.Close(ctx)
	if q := pgQuery(t, e.g, writerID, `copy "`+tbl+`"*`); q == nil || q.Rows != n || q.Class != "write" {
		t.Errorf("got recorded CopyFrom %+v, want rows %d, class write", q, n)
	}
}

func testListenNotify(t *testing.T, e *pgEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	channel := pgName("chan")
	pgExec(t, c, "LISTEN "+channel)
	// From a session that does not go through Postern, and from one that does.
	su := superuser(t, "test")
	pgExec(t, su, "NOTIFY "+channel+", 'direct'")
	other := pgConnect(t, e.g, e.writer, "postgres", "test")
	if _, err := other.Exec(ctx, "SELECT pg_notify($1, $2)", channel, "through postern"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"direct", "through postern"} {
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for notification %q: %v", want, err)
		}
		if n.Channel != channel || n.Payload != want {
			t.Fatalf("got notification %s %q, want %s %q", n.Channel, n.Payload, channel, want)
		}
	}
	wantUsable(t, c, "notifications")
}

func testLargeResult(t *testing.T, e *pgEnv) {
	const n = 1_000_000
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	sql := fmt.Sprintf("SELECT g, repeat('x', 64) FROM generate_series(1, %d) g", n)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	var mid uint64
	rows, err := c.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	var sum, count int64
	for rows.Next() {
		var g int32
		var x []byte
		if err := rows.Scan(&g, &x); err != nil || len(x) != 64 {
			t.Fatalf("row %d: got %d, %d bytes, %v", count, g, len(x), err)
		}
		sum += int64(g)
		count++
		if count == n/2 {
			mid = heap()
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("after %d rows: %v", count, err)
	}
	if want := int64(n) * (n + 1) / 2; count != n || sum != want {
		t.Fatalf("got %d rows summing to %d, want %d summing to %d", count, sum, n, want)
	}
	t.Logf("live heap: %d MB before, %d MB halfway", before>>20, mid>>20)
	// About 80 MB cross the gateway and the agent (both in this process);
	// halfway, they must hold no more than their flow-control windows (a
	// 16 MB yamux stream window, in buffers that may have doubled), far
	// less than the result.
	if mid > before && mid-before > 64<<20 {
		t.Errorf("live heap grew by %d MB while half of an 80 MB result was read, want it flat (streamed)", (mid-before)>>20)
	}
	c.Close(ctx)
	rec := pgQuery(t, e.g, writerID, sql)
	if rec == nil || rec.Rows != n || rec.Verdict != protocols.VerdictAllow {
		t.Fatalf("got recorded query %+v, want one with rows %d and verdict allow", rec, n)
	}
}

// testCancel: a cancel request reaches exactly the session whose key it
// carries; any other key does nothing.
func testCancel(t *testing.T, e *pgEnv) {
	su := superuser(t, "postgres")
	type sleeper struct {
		c      *pgx.Conn
		marker string
		cancel context.CancelFunc
		done   chan error
	}
	sleep := func() *sleeper {
		s := &sleeper{c: pgConnect(t, e.g, e.writer, "postgres", "test"), marker: pgName("sleep"), done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		go func() {
			_, err := s.c.Exec(ctx, "SELECT pg_sleep(30) AS "+s.marker)
			s.done <- err
		}()
		waitFor(t, 10*time.Second, "pg_sleep running", func() bool { return backendActive(t, su, s.marker) })
		return s
	}
	wait := func(s *sleeper) error {
		t.Helper()
		select {
		case err := <-s.done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("the query was not cancelled within 20s")
			return nil
		}
	}
	stillRunning := func(s *sleeper, after string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		select {
		case err := <-s.done:
			t.Fatalf("after %s, the other session's query ended: %v", after, err)
		default:
		}
		if !backendActive(t, su, s.marker) {
			t.Fatalf("after %s, the other session's query no longer runs", after)
		}
	}

	a, b := sleep(), sleep()
	// pgx: cancelling the context sends a CancelRequest (over TLS, as pgx 5.12 does).
	a.cancel()
	wantPgError(t, "query whose context was cancelled", wait(a), "57014")
	stillRunning(b, "cancelling another session")
	wantUsable(t, a.c, "a cancelled query")

	// Keys that are not b's do nothing: a wrong secret, the right secret
	// with another pid, and b's key sent to the real server (the client must
	// not hold the real backend's key).
	pid, key := b.c.PgConn().PID(), b.c.PgConn().SecretKey()
	wrong := bytes.Clone(key)
	wrong[0] ^= 0xff
	var realPID uint32
	if err := su.QueryRow(context.Background(), "SELECT pid FROM pg_stat_activity WHERE query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()", b.marker).Scan(&realPID); err != nil {
		t.Fatal(err)
	}
	for what, k := range map[string]struct {
		addr string
		pid  uint32
		key  []byte
	}{
		"wrong secret":                        {e.g.addr(), pid, wrong},
		"another pid":                         {e.g.addr(), pid + 1, key},
		"the real backend's pid":              {e.g.addr(), realPID, key},
		"the client's key, to server":         {pgAddr, realPID, key},
		"the client's key and pid, to server": {pgAddr, pid, key},
	} {
		if k.pid == realPID && k.addr == e.g.addr() && pid == realPID {
			continue // the gateway hands out the real pid: this is b's own key
		}
		if err := rawCancel(k.addr, k.pid, k.key); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		stillRunning(b, "a cancel request with "+what)
	}
	// The right key in plaintext to the gateway port, as psql 15 sends it.
	if err := rawCancel(e.g.addr(), pid, key); err != nil {
		t.Fatal(err)
	}
	wantPgError(t, "query cancelled with a plaintext CancelRequest", wait(b), "57014")
	b.cancel()
	wantUsable(t, b.c, "a cancelled query")
}

// testPsqlCancel: Ctrl-C in psql (SIGINT) cancels the running statement.
func testPsqlCancel(t *testing.T, e *pgEnv) {
	dir := identityDir(t, e.g, e.writer)
	su := superuser(t, "postgres")
	marker := pgName("psqlsleep")
	var out logBuffer
	cmd := exec.Command("psql", "-X", "-d", libpqTLS(e.g.addr(), dir, "postgres", "test"), "-c", "SELECT pg_sleep(30) AS "+marker)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	waitFor(t, 15*time.Second, "psql's pg_sleep running", func() bool { return backendActive(t, su, marker) })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if !strings.Contains(out.String(), "canceling statement due to user request") {
			t.Fatalf("psql exited (%v) with %q, want the statement cancelled", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("psql did not end within 20s of SIGINT; output %q", out.String())
	}
}

func testReadOnlyFlag(t *testing.T, e *pgEnv) {
	for name, tc := range map[string]struct {
		conn *pgx.Conn
		want string
	}{
		"reader": {pgConnect(t, e.g, e.reader, "postgres", "test"), "on"},
		"writer": {pgConnect(t, e.g, e.writer, "postgres", "test"), "off"},
	} {
		if got := pgString(t, tc.conn, "SHOW default_transaction_read_only"); got != tc.want {
			t.Errorf("%s: got default_transaction_read_only %s, want %s", name, got, tc.want)
		}
		var ro string
		if err := tc.conn.QueryRow(context.Background(), "SELECT current_setting('transaction_read_only')").Scan(&ro); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if ro != tc.want {
			t.Errorf("%s: got transaction_read_only %s, want %s", name, ro, tc.want)
		}
	}
}

// testEdgeCases: what drivers and pools do besides queries. pgx's Ping (a
// comment-only query), an empty query, a large parameter and a large query text, notices,
// portals fetched a few rows at a time, cursors in a read-only session,
// direct TLS negotiation (sslnegotiation=direct), and a session and its
// cancel through postern connect.
func testEdgeCases(t *testing.T, e *pgEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := pgConnect(t, e.g, e.reader, "postgres", "test")
	if err := r.Ping(ctx); err != nil {
		t.Errorf("reader's Ping (-- ping): %v", err)
	}
	if _, err := r.PgConn().Exec(ctx, "").ReadAll(); err != nil {
		t.Errorf("empty query: %v", err)
	}
	if _, err := r.PgConn().Exec(ctx, " ; ").ReadAll(); err != nil {
		t.Errorf("query of a lone semicolon: %v", err)
	}
	var n int
	long := "SELECT length('" + strings.Repeat("x", 1<<20) + "')"
	if err := r.QueryRow(ctx, long).Scan(&n); err != nil || n != 1<<20 {
		t.Errorf("1 MB query text: got %d, %v", n, err)
	}
	big := bytes.Repeat([]byte{0xab}, 8<<20)
	if err := r.QueryRow(ctx, "SELECT length($1::bytea)", big).Scan(&n); err != nil || n != len(big) {
		t.Errorf("8 MB parameter: got %d, %v", n, err)
	}
	pgExec(t, r, "BEGIN; DECLARE cur CURSOR FOR SELECT g FROM generate_series(1, 5) g")
	var got []string
	for _, fetch := range []string{"FETCH 2 FROM cur", "FETCH ALL FROM cur"} {
		rows, err := r.PgConn().Exec(ctx, fetch).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", fetch, err)
		}
		for _, row := range rows[0].Rows {
			got = append(got, string(row[0]))
		}
	}
	pgExec(t, r, "CLOSE cur; COMMIT")
	if strings.Join(got, ",") != "1,2,3,4,5" {
		t.Errorf("cursor: got %v, want 1..5", got)
	}

	// Execute with a row limit suspends the portal; the next Execute goes on.
	h := pgConnect(t, e.g, e.reader, "postgres", "test").PgConn()
	hc, err := h.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "SELECT g FROM generate_series(1, 5) g"}, &pgproto3.Bind{},
		&pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{}, &pgproto3.Sync{},
	} {
		hc.Frontend.Send(m)
	}
	if err := hc.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for {
		msg, err := hc.Frontend.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", seen, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ParseComplete:
			seen = append(seen, "parse")
		case *pgproto3.BindComplete:
			seen = append(seen, "bind")
		case *pgproto3.DataRow:
			seen = append(seen, string(m.Values[0]))
		case *pgproto3.PortalSuspended:
			seen = append(seen, "suspended")
		case *pgproto3.CommandComplete:
			seen = append(seen, "complete")
		case *pgproto3.ErrorResponse:
			seen = append(seen, "error "+m.Code)
		default:
			seen = append(seen, fmt.Sprintf("%T", m))
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if want := "parse bind 1 2 suspended 3 4 suspended 5 complete *pgproto3.ReadyForQuery"; strings.Join(seen, " ") != want {
		t.Errorf("portal in steps: got %q, want %q", strings.Join(seen, " "), want)
	}

	// Notices from the server reach the client.
	notices := make(chan string, 1)
	cfg := pgConfig(t, e.g, "pg", e.writer, "postgres", "test")
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message }
	w, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	pgExec(t, w, "DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
	select {
	case m := <-notices:
		if m != "hello from plpgsql" {
			t.Errorf("got notice %q", m)
		}
	default:
		t.Error("got no notice")
	}

	// Direct TLS (ALPN postgresql), no SSLRequest first.
	cfg = pgConfig(t, e.g, "pg", e.reader, "postgres", "test")
	cfg.SSLNegotiation = "direct"
	d, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("sslnegotiation=direct: %v", err)
	}
	defer d.Close(ctx)
	if got := pgString(t, d, "SHOW default_transaction_read_only"); got != "on" {
		t.Errorf("direct TLS reader: got default_transaction_read_only %s, want on", got)
	}

	// Through postern connect: a plaintext session, and its cancel sent in
	// plaintext to the local port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	p := &connect.Proxy{Service: "pg", Gateway: e.g.addr(), IdentityDir: identityDir(t, e.g, e.writer)}
	go p.Serve(pctx, ln)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	lcfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " user=postgres dbname=test sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	lcfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 15 * time.Second}
	}
	l, err := pgx.ConnectConfig(ctx, lcfg)
	if err != nil {
		t.Fatalf("through postern connect: %v", err)
	}
	defer l.Close(ctx)
	wantUsable(t, l, "connecting through postern connect")
	su := superuser(t, "postgres")
	marker := pgName("connectsleep")
	qctx, qcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := l.Exec(qctx, "SELECT pg_sleep(30) AS "+marker)
		done <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep running", func() bool { return backendActive(t, su, marker) })
	qcancel()
	select {
	case err := <-done:
		wantPgError(t, "cancel through postern connect", err, "57014")
	case <-time.After(20 * time.Second):
		t.Fatal("the query through postern connect was not cancelled within 20s")
	}
	wantUsable(t, l, "a cancel through postern connect")
}
