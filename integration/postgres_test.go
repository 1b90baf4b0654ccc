package integration

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/connect"
	"github.com/postern/postern/pki"
)

const pgAddr = "127.0.0.1:5432"

// TestPostgresOverTunnel: plain libpq (psql) reaches the local PostgreSQL
// through the gateway: SSLRequest answered 'S', TLS with the user's SVID and
// verify-full against the bundle, SNI pg.localhost; and through postern
// connect with sslmode=disable. Until the Postgres handler lands the bytes
// are relayed opaquely, so this runs against trust auth.
func TestPostgresOverTunnel(t *testing.T) {
	if c, err := net.DialTimeout("tcp", pgAddr, 2*time.Second); err != nil {
		t.Fatalf("PostgreSQL must answer on %s for this test (.ci/run starts it): %v", pgAddr, err)
	} else {
		c.Close()
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql is needed (.ci/run installs postgresql-client): %v", err)
	}
	g := startGateway(t, basePolicy)
	startAgent(t, g, "db1", "quic", t.TempDir(), agent.Service{Name: "pg", Protocol: "postgres", Address: pgAddr}).waitConnected(t)
	dir := t.TempDir()
	svid := issue(t, g, "spiffe://postern.local/user/carol", "ops")
	if err := pki.WriteFiles(dir, svid, g.srv.Data().CA.Roots()); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(g.addr())
	run := func(conninfo string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, psql, conninfo, "-XAtc", "select 'through '||'postern'").CombinedOutput()
		if err != nil {
			t.Fatalf("psql %q: %v\n%s", conninfo, err, out)
		}
		return strings.TrimSpace(string(out))
	}

	t.Run("sslmode=verify-full with the SVID", func(t *testing.T) {
		got := run("host=pg.localhost hostaddr=127.0.0.1 port=" + port + " sslmode=verify-full" +
			" sslrootcert=" + filepath.Join(dir, pki.BundleFile) + " sslcert=" + filepath.Join(dir, pki.SVIDFile) +
			" sslkey=" + filepath.Join(dir, pki.KeyFile) + " user=postgres dbname=postgres connect_timeout=10")
		if got != "through postern" {
			t.Fatalf("got %q, want %q", got, "through postern")
		}
	})

	t.Run("postern connect with sslmode=disable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &connect.Proxy{Service: "pg", Gateway: g.addr(), IdentityDir: dir}
		go p.Serve(ctx, ln)
		_, lport, _ := net.SplitHostPort(ln.Addr().String())
		got := run("host=127.0.0.1 port=" + lport + " sslmode=disable user=postgres dbname=postgres connect_timeout=10")
		if got != "through postern" {
			t.Fatalf("got %q, want %q", got, "through postern")
		}
	})

	t.Run("without a client certificate libpq is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, psql, "host=pg.localhost hostaddr=127.0.0.1 port="+port+
			" sslmode=verify-full sslrootcert="+filepath.Join(dir, pki.BundleFile)+
			" user=postgres dbname=postgres connect_timeout=10", "-XAtc", "select 1").CombinedOutput()
		if err == nil {
			t.Fatalf("psql without a certificate got through: %s", out)
		}
	})
}
