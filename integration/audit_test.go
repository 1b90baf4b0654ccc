package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// TestAuditCrash: kill -9 the gateway binary in the middle of a psql
// session; after the restart the session's recording is there, sealed as
// truncated, verifies with the public audit key, and holds every query
// the client had an answer for. postern audit list/verify and replay
// show it.
func TestAuditCrash(t *testing.T) {
	requirePostgres(t)
	c := startCLIGateway(t)
	c.agent(t, "--service", "pg=postgres://"+pgAddr, "--transport", "quic")
	ident := c.identity(t, "ann", writerID, "ops")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", libpqTLS(c.listen, ident, "postgres", "test"))
	cmd.Dir = c.root
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	const answered = 5
	for i := range answered {
		fmt.Fprintf(stdin, "SELECT 'answer %d';\n", i)
		if !lines.Scan() || lines.Text() != fmt.Sprintf("answer %d", i) {
			t.Fatalf("query %d: got %q (%v), psql stderr: %s", i, lines.Text(), lines.Err(), stderr.String())
		}
	}
	if err := c.gateway.cmd.Process.Kill(); err != nil { // SIGKILL: no chance to flush or seal
		t.Fatal(err)
	}
	<-c.gateway.done
	fmt.Fprintf(stdin, "SELECT 'after the crash';\n")
	stdin.Close()
	io.Copy(io.Discard, stdout)
	cmd.Wait()

	rec := filepath.Join(c.data, "recordings")
	files, err := audit.List(rec)
	if err != nil {
		t.Fatal(err)
	}
	var open []audit.File
	for _, f := range files {
		if f.Kind == audit.Unsealed {
			open = append(open, f)
		}
	}
	if len(open) != 1 {
		t.Fatalf("after kill -9: %d open recordings (%v), want the psql session's", len(open), files)
	}
	id := open[0].Session

	// The restarted gateway gets ports of its own: the killed one's may
	// have gone to another process's outgoing connection meanwhile.
	ops := loopback(freePort(t))
	c.listen = loopback(freePort(t))
	c.gateway = startProc(t, t, "gateway", c.root, "gateway", "--data-dir", c.data, "--listen", c.listen, "--ops-listen", ops,
		"--policy", filepath.Join(c.root, "policy.yaml"))
	waitReady(t, c.gateway, ops)
	c.gateway.waitLog(t, time.Second, "sealed recordings cut short", 1)

	keys, err := audit.LoadKeys(filepath.Join(c.data, audit.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(audit.Path(rec, id), keys)
	if err != nil || !res.Sealed {
		t.Fatalf("recovered recording: %+v, %v", res, err)
	}
	var (
		queries []string
		end     protocols.SessionEnd
	)
	audit.Read(audit.Path(rec, id), func(r audit.Record) error {
		switch r.Type {
		case protocols.PostgresQuery:
			var q protocols.PostgresQueryEvent
			json.Unmarshal(r.Data, &q)
			if strings.HasPrefix(q.SQL, "SELECT 'answer") {
				queries = append(queries, q.SQL)
			}
		case protocols.SessionEnded:
			json.Unmarshal(r.Data, &end)
		}
		return nil
	})
	if len(queries) != answered {
		t.Errorf("recorded %d of the %d answered queries: %q", len(queries), answered, queries)
	}
	if end.Outcome != audit.OutcomeTruncated {
		t.Errorf("got outcome %q, want truncated", end.Outcome)
	}

	t.Run("audit list", func(t *testing.T) {
		r := runCLI(t, c.root, "", "audit", "list", "--data-dir", c.data, "--outcome", "truncated", "--format", "json")
		if r.code != 0 || !strings.Contains(r.stdout, `"id":"`+id+`"`) || strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the one truncated session", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("audit verify", func(t *testing.T) {
		r := runCLI(t, c.root, "", "audit", "verify", "--data-dir", c.data, id)
		if r.code != 0 || !strings.Contains(r.stdout, "ok "+id) {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("replay", func(t *testing.T) {
		r := runCLI(t, c.root, "", "replay", "--data-dir", c.data, "--speed", "0", id)
		if r.code != 0 || !strings.Contains(r.stdout, "SELECT 'answer 4'") || !strings.Contains(r.stdout, "truncated") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

// TestAuditLoad: 200 sessions at once through the gateway, each writing
// events; every one is recorded, sealed, verifies, and its byte counts and
// its index row match what the client moved.
func TestAuditLoad(t *testing.T) {
	// 200 TLS handshakes at once on two CPUs under the race detector can
	// queue past the harness's 3 s: this test is about recording, not that.
	g := startGateway(t, basePolicy, func(c *gateway.Config) { c.HandshakeTimeout = 30 * time.Second })
	a := startAgent(t, g, "db1", "quic", t.TempDir(), echoService(startEcho(t)))
	a.waitConnected(t)
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	waitFor(t, 5*time.Second, "echo reachable", func() bool { return echoOnce(g, "echo", alice) == nil })
	since := time.Now()

	const sessions = 200
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialService(g, "echo", alice)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := []byte(strings.Repeat("x", 100+i))
			buf := make([]byte, len(msg))
			for range 5 {
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	dir := g.srv.Data().RecordingsPath()
	keys, err := audit.LoadKeys(filepath.Join(g.srv.Data().Path, audit.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var rows []store.Session
	waitFor(t, 20*time.Second, "200 sealed sessions in the index", func() bool {
		rows, err = g.srv.Data().Store.Sessions(context.Background(), store.SessionFilter{Service: "echo", Since: since})
		sealed := 0
		for _, r := range rows {
			if r.Status == audit.StatusSealed {
				sealed++
			}
		}
		return err == nil && sealed == sessions
	})
	// A sealed session's recording is compressed after its row says
	// sealed: wait for the compressed files.
	waitFor(t, 20*time.Second, "200 recordings compressed", func() bool {
		for _, row := range rows {
			if _, err := os.Stat(audit.Path(dir, row.ID)); err != nil {
				return false
			}
		}
		return true
	})
	seen := map[int64]bool{}
	for _, row := range rows {
		res, err := audit.Verify(audit.Path(dir, row.ID), keys)
		if err != nil || !res.Sealed || int64(res.Records) != row.Events {
			t.Fatalf("%s: %+v, %v; index says %d records", row.ID, res, err, row.Events)
		}
		var in, out int64
		audit.Read(audit.Path(dir, row.ID), func(r audit.Record) error {
			if r.Type == protocols.TCPData {
				var d protocols.TCPDataEvent
				json.Unmarshal(r.Data, &d)
				if d.Direction == protocols.ClientToService {
					in += d.Bytes
				} else {
					out += d.Bytes
				}
			}
			return nil
		})
		if in != row.BytesIn || out != row.BytesOut || in != out || in%5 != 0 || in < 500 {
			t.Fatalf("%s: tcp.data in %d out %d, index %d/%d", row.ID, in, out, row.BytesIn, row.BytesOut)
		}
		seen[in/5] = true
	}
	if len(seen) != sessions {
		t.Fatalf("got %d distinct sessions by size, want %d", len(seen), sessions)
	}
}

// TestAuditFailClosed: a session whose events cannot reach the disk (here
// a buffer too small for two tcp.data records) is closed by the gateway,
// and its recording still ends and verifies; with fail-open it runs on.
func TestAuditFailClosed(t *testing.T) {
	for name, failOpen := range map[string]bool{"fail closed": false, "fail open": true} {
		t.Run(name, func(t *testing.T) {
			g := startGateway(t, basePolicy, func(c *gateway.Config) {
				c.Audit = audit.Options{MaxBuffer: 64, FlushInterval: time.Hour, FailOpen: failOpen}
			})
			a := startAgent(t, g, "db1", "tls", t.TempDir(), echoService(startEcho(t)))
			a.waitConnected(t)
			alice := issue(t, g, "spiffe://postern.local/user/alice")
			c, err := dialService(g, "echo", alice)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			msg, buf := []byte("ping\n"), make([]byte, 5)
			start := time.Now()
			var cut error
			for time.Since(start) < 4*time.Second {
				if _, err := c.Write(msg); err != nil {
					cut = err
					break
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					cut = err
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if (cut == nil) != failOpen {
				t.Fatalf("after %v: connection error %v, fail open %v", time.Since(start), cut, failOpen)
			}
			c.Close()
			if !failOpen && !strings.Contains(g.logs.String(), "cannot be recorded") {
				t.Errorf("no log line says why the session was closed")
			}
			dir := g.srv.Data().RecordingsPath()
			keys, err := audit.LoadKeys(filepath.Join(g.srv.Data().Path, audit.PublicKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the session's recording sealed", func() bool {
				files, _ := audit.List(dir)
				for _, f := range files {
					if res, err := audit.Verify(f.Path, keys); err == nil && res.Sealed {
						return true
					}
				}
				return false
			})
		})
	}
}
