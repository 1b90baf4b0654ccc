package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/tcp"
	"github.com/postern/postern/protocols/tunnel"
)

// benchDB is the database pgbench initializes for BenchmarkPgbench.
const benchDB = "postern_bench"

// benchPGPolicy turns statement authorization on for the benchmark's
// identity: every statement is classified and decided.
const benchPGPolicy = `rules:
  - name: bench-pg
    identities: [spiffe://postern.local/user/bench]
    services: [pg, pgraw]
    postgres:
      databases: [` + benchDB + `]
      users: [postgres]
      statements: [read, write]
`

var (
	tpsRe     = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	latencyRe = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// BenchmarkPgbench runs pgbench against the local PostgreSQL directly and
// through Postern (client —TLS→ gateway —tunnel→ agent —TCP→ server) over
// each tunnel transport, with statement policy on: -S (select only) and
// TPC-B, 4 clients. The -raw paths reach the same server as a plain TCP
// service through the same chain, without the Postgres handler. An op is one transaction; tps and the average latency
// come from pgbench itself.
func BenchmarkPgbench(b *testing.B) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		b.Fatalf("pgbench is needed: %v", err)
	}
	initBenchDB(b)
	base := []string{"-n", "-c", "4", "-j", "2"}
	scripts := map[string][]string{"select": {"-S"}, "tpcb": {}, "select-prepared": {"-S", "-M", "prepared"}}

	paths := map[string][]string{"direct": {"PGHOST=127.0.0.1", "PGPORT=5432", "PGSSLMODE=disable"}}
	// Yardsticks, plain TCP relays with no TLS, no tunnel and no parsing:
	// relay is one hop in this process (Go, like Postern's), relay2 two in
	// a row — Postern's chain has two hops (gateway, agent), which the
	// architecture fixes: the agent dials out to the gateway. socat and
	// socat2 are the same in C, one process per hop outside the Go runtime,
	// like the one-hop proxies the targets were set against; they are run
	// when socat is installed.
	relayEnv := func(addr string) []string {
		_, port, _ := net.SplitHostPort(addr)
		return []string{"PGHOST=127.0.0.1", "PGPORT=" + port, "PGSSLMODE=disable"}
	}
	paths["relay"] = relayEnv(relayHops(b, 1, "127.0.0.1:5432"))
	paths["relay2"] = relayEnv(relayHops(b, 2, "127.0.0.1:5432"))
	if _, err := exec.LookPath("socat"); err == nil {
		paths["socat"] = relayEnv(socatHops(b, 1, "127.0.0.1:5432"))
		paths["socat2"] = relayEnv(socatHops(b, 2, "127.0.0.1:5432"))
	}
	// norec is the TLS chain with a gateway that records nothing: what
	// recording costs is the difference to tls.
	const norec = tunnel.TLS + "-norec"
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC, norec} {
		var opts []gwOption
		if transport == norec {
			opts = append(opts, func(c *gateway.Config) {
				c.Recorder = protocols.RecorderFunc(func(protocols.Event) {})
			})
		}
		g := startGateway(b, benchPGPolicy, opts...)
		tr := transport
		if transport == norec {
			tr = tunnel.TLS
		}
		a := startAgent(b, g, "bench-pg-"+transport, tr, b.TempDir(),
			agent.Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432"},
			agent.Service{Name: "pgraw", Protocol: "tcp", Address: "127.0.0.1:5432"})
		if got := a.waitConnected(b); got != tr {
			b.Fatalf("got transport %q, want %q", got, tr)
		}
		dir := b.TempDir()
		svid := issue(b, g, benchIdentity)
		if err := pki.WriteFiles(dir, svid, g.srv.Data().CA.Roots()); err != nil {
			b.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(g.addr())
		tlsEnv := []string{"PGHOSTADDR=127.0.0.1", "PGPORT=" + port,
			"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + filepath.Join(dir, pki.BundleFile),
			"PGSSLCERT=" + filepath.Join(dir, pki.SVIDFile), "PGSSLKEY=" + filepath.Join(dir, pki.KeyFile)}
		paths[transport] = append([]string{"PGHOST=pg.localhost"}, tlsEnv...)
		// The same chain with the service as plain TCP: the server's own
		// protocol inside the tunnel, no Postgres handler, no policy per
		// statement: what the handler itself costs is the difference.
		paths[transport+"-raw"] = append([]string{"PGHOST=pgraw.localhost"}, tlsEnv...)
		waitFor(b, 10*time.Second, "pg reachable through "+transport, func() bool {
			return pgbench(b, paths[transport], append(base, "-S", "-t", "1")) == nil
		})
	}
	for _, script := range []string{"select", "select-prepared", "tpcb"} {
		for _, path := range []string{"direct", "relay", "relay2", "socat", "socat2", tunnel.TLS, norec, tunnel.TLS + "-raw", tunnel.QUIC, tunnel.QUIC + "-raw"} {
			if paths[path] == nil {
				continue // socat is not installed
			}
			b.Run(script+"/"+path, func(b *testing.B) {
				perClient := max(b.N/4, 1)
				args := append(append(append([]string{}, base...), scripts[script]...), "-t", strconv.Itoa(perClient))
				b.ResetTimer()
				out, err := pgbenchOut(paths[path], args)
				b.StopTimer()
				if err != nil {
					b.Fatalf("pgbench: %v\n%s", err, out)
				}
				if m := tpsRe.FindStringSubmatch(out); m != nil {
					tps, _ := strconv.ParseFloat(m[1], 64)
					b.ReportMetric(tps, "tps")
				}
				if m := latencyRe.FindStringSubmatch(out); m != nil {
					ms, _ := strconv.ParseFloat(m[1], 64)
					b.ReportMetric(ms, "ms/txn")
				}
			})
		}
		// What recording costs: the TLS chain with recording on and off,
		// in runs that alternate (on-off, off-on, …) so that the
		// machine's drift falls on both; on/off is the median of the
		// rounds' ratios. A run is b.N/16 transactions over 4 new
		// connections, so it should last seconds (make bench: -benchtime
		// 1024000x): a run of a fraction of a second weighs the
		// sessions' starts and seals as if they were that short. Each run
		// is followed by a pause in which the gateway finishes its
		// background work (compressing the sealed recordings); the CPU
		// time over the run and the pause, per transaction, the process's
		// and the machine's, is reported beside the ratio
		// (scripts/recording-profile.sh splits it further).
		b.Run(script+"/recording", func(b *testing.B) {
			const rounds = 8
			perClient := max(b.N/(4*2*rounds), 1)
			args := append(append(append([]string{}, base...), scripts[script]...), "-t", strconv.Itoa(perClient))
			alternate(b, rounds, "tps", "txn", func(on bool) (float64, int) {
				path := norec
				if on {
					path = tunnel.TLS
				}
				out, err := pgbenchOut(paths[path], args)
				if err != nil {
					b.Fatalf("pgbench: %v\n%s", err, out)
				}
				m := tpsRe.FindStringSubmatch(out)
				if m == nil {
					b.Fatalf("no tps in pgbench output:\n%s", out)
				}
				tps, _ := strconv.ParseFloat(m[1], 64)
				return tps, 4 * perClient
			})
		})
	}
}

// relayHops runs n plain TCP relays (tcp.Relay) in this process, one in
// front of the other, the last in front of upstream, and returns the
// address of the first.
func relayHops(b testing.TB, n int, upstream string) string {
	addr := upstream
	for range n {
		next := addr
		addr = serveTCP(b, func(c net.Conn) {
			up, err := net.Dial("tcp", next)
			if err != nil {
				return
			}
			(&tcp.Relay{}).Run(context.Background(), c, up)
		})
	}
	return addr
}

// socatHops starts n socat processes, each a plain TCP relay that forks per
// connection, one in front of the other, the last in front of upstream, and
// returns the address of the first.
func socatHops(b *testing.B, n int, upstream string) string {
	addr := upstream
	for range n {
		port := strconv.Itoa(freePort(b))
		cmd := exec.Command("socat", "TCP-LISTEN:"+port+",bind=127.0.0.1,fork,reuseaddr", "TCP:"+addr)
		if err := cmd.Start(); err != nil {
			b.Fatalf("starting socat: %v", err)
		}
		b.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		addr = net.JoinHostPort("127.0.0.1", port)
		waitFor(b, 5*time.Second, "socat listening on "+addr, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return addr
}

// processCPU returns the CPU time, user and system, of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU returns the CPU time the whole machine has spent busy since
// it started (user, system, interrupts; not idle, I/O wait or time taken
// by the hypervisor), from /proc/stat; 0 where it cannot be read.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ)
}

// userHZ is the unit of /proc/stat's times, 100 a second on every Linux
// architecture Postern builds for.
const userHZ = 100

// median returns the median of xs, which it sorts.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func pgbench(b *testing.B, env, args []string) error {
	out, err := pgbenchOut(env, args)
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func pgbenchOut(env, args []string) (string, error) {
	cmd := exec.Command("pgbench", args...)
	cmd.Env = append(append(os.Environ(), "PGUSER=postgres", "PGDATABASE="+benchDB, "PGCONNECT_TIMEOUT=10"), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// initBenchDB creates the benchmark database and pgbench's tables (scale
// 1) directly on the server, once per machine.
func initBenchDB(b *testing.B) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		b.Fatalf("connecting to PostgreSQL on 127.0.0.1:5432: %v", err)
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", benchDB).Scan(&exists); err != nil {
		b.Fatal(err)
	}
	if !exists {
		if _, err := c.Exec(ctx, "CREATE DATABASE "+benchDB); err != nil {
			b.Fatal(err)
		}
	}
	if out, err := pgbenchOut([]string{"PGHOST=127.0.0.1", "PGPORT=5432", "PGSSLMODE=disable"}, []string{"-i", "-q", "-s", "1"}); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
}
