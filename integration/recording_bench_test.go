package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/tunnel"
)

// BenchmarkRecording measures what recording costs the whole chain's
// benchmarks (BenchmarkChain, BenchmarkConnect), over each transport: the
// chain with recording on, as the gateway always runs, against the same
// chain through a second gateway whose recorder discards everything. chain is bulk
// throughput on one connection (one session, its tcp.data records batched);
// connect is new connections, each a session whose recording is created,
// sealed and compressed. Runs alternate as in BenchmarkPgbench's recording
// (on-off, off-on, …), each followed by a pause in which the gateway
// finishes its background work; on/off is the median of the rounds' ratios,
// and the process's CPU time over each run and its pause is reported per
// MiB or per connection.
func BenchmarkRecording(b *testing.B) {
	sink, echo := startCountingSink(b), startEcho(b)
	type key struct {
		transport string
		on        bool
	}
	type chain struct {
		g    *gw
		svid *x509svid.SVID
	}
	chains := map[key]chain{}
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC} {
		for _, on := range []bool{true, false} {
			var opts []gwOption
			name := "bench-rec-on-" + transport
			if !on {
				name = "bench-rec-off-" + transport
				opts = append(opts, func(c *gateway.Config) {
					c.Recorder = protocols.RecorderFunc(func(protocols.Event) {})
				})
			}
			g := startGateway(b, basePolicy, opts...)
			a := startAgent(b, g, name, transport, b.TempDir(),
				agent.Service{Name: "sink", Protocol: "tcp", Address: sink}, echoService(echo))
			if got := a.waitConnected(b); got != transport {
				b.Fatalf("got transport %q, want %q", got, transport)
			}
			svid := issue(b, g, benchIdentity, "ops")
			waitFor(b, 10*time.Second, "sink and echo reachable", func() bool {
				return sinkReachable(g, "sink", svid) == nil && echoOnce(g, "echo", svid) == nil
			})
			chains[key{transport, on}] = chain{g, svid}
		}
	}

	const rounds = 8
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC} {
		b.Run("chain/"+transport, func(b *testing.B) {
			chunks := max(b.N/(2*rounds), 1)
			buf := bulkBuffer()
			alternate(b, rounds, "MB/s", "MiB", func(on bool) (float64, int) {
				c := chains[key{transport, on}]
				conn, err := dialService(c.g, "sink", c.svid)
				if err != nil {
					b.Fatalf("dialing: %v", err)
				}
				defer conn.Close()
				if err := conn.Handshake(); err != nil {
					b.Fatalf("handshaking: %v", err)
				}
				start := time.Now()
				if err := sendBulk(conn, buf, chunks); err != nil {
					b.Fatal(err)
				}
				return float64(chunks*benchWrite) / 1e6 / time.Since(start).Seconds(), chunks * benchWrite >> 20
			})
		})
	}
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC} {
		b.Run("connect/"+transport, func(b *testing.B) {
			conns := max(b.N/(2*rounds), 1)
			alternate(b, rounds, "conn/s", "conn", func(on bool) (float64, int) {
				c := chains[key{transport, on}]
				start := time.Now()
				for range conns {
					if err := echoOnce(c.g, "echo", c.svid); err != nil {
						b.Fatalf("connecting: %v", err)
					}
				}
				return float64(conns) / time.Since(start).Seconds(), conns
			})
		})
	}
}

// alternate runs measure with recording on and off, in rounds that
// alternate which goes first, each run followed by a pause of 200 ms for
// the gateway's background work (compressing sealed recordings). measure
// returns a rate (metric names it) and how many units it did;
// reported are the medians of the rates, of the rounds' ratios on/off, and
// of the CPU time per unit over each run and its pause: the process's
// (gateway, agent and client in one), and the machine's (every process,
// the kernel's own threads and interrupts; from /proc/stat, where there is
// one), which counts what recording costs where the run is bound by
// latency rather than by the CPUs, as TPC-B is.
func alternate(b *testing.B, rounds int, metric, unit string, measure func(on bool) (rate float64, units int)) {
	var on, off, ratio, onCPU, offCPU, onMachine, offMachine []float64
	windows := openWindows(b)
	run := func(rec bool) (rate, cpu, machine float64) {
		before, machineBefore := processCPU(), machineCPU()
		start := monotonic()
		r, n := measure(rec)
		windows.add(rec, start, monotonic(), n)
		time.Sleep(200 * time.Millisecond)
		perUnit := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }
		return r, perUnit(processCPU() - before), perUnit(machineCPU() - machineBefore)
	}
	b.ResetTimer()
	for i := range rounds {
		var a, c, acpu, ccpu, am, cm float64
		if i%2 == 0 {
			a, acpu, am = run(true)
			c, ccpu, cm = run(false)
		} else {
			c, ccpu, cm = run(false)
			a, acpu, am = run(true)
		}
		on, off, ratio = append(on, a), append(off, c), append(ratio, a/c)
		onCPU, offCPU = append(onCPU, acpu), append(offCPU, ccpu)
		onMachine, offMachine = append(onMachine, am), append(offMachine, cm)
	}
	b.StopTimer()
	// The rounds one by one, for the spread the medians hide (before
	// they sort the slices).
	var rs, ps, ms []string
	for i := range ratio {
		rs = append(rs, fmt.Sprintf("%.3f", ratio[i]))
		ps = append(ps, fmt.Sprintf("%+.0f", onCPU[i]-offCPU[i]))
		ms = append(ms, fmt.Sprintf("%+.0f", onMachine[i]-offMachine[i]))
	}
	b.Logf("rounds on/off: %s", strings.Join(rs, " "))
	b.Logf("rounds CPU µs a %s on − off, process: %s; machine: %s", unit, strings.Join(ps, " "), strings.Join(ms, " "))
	b.ReportMetric(median(on), "on-"+metric)
	b.ReportMetric(median(off), "off-"+metric)
	b.ReportMetric(median(ratio), "on/off")
	b.ReportMetric(median(onCPU), "on-cpu-µs/"+unit)
	b.ReportMetric(median(offCPU), "off-cpu-µs/"+unit)
	if machineCPU() > 0 {
		b.ReportMetric(median(onMachine), "on-machine-cpu-µs/"+unit)
		b.ReportMetric(median(offMachine), "off-machine-cpu-µs/"+unit)
	}
}

// windowsEnv names a file to which alternate appends each run's window,
// for scripts/recording-profile.sh: "on" or "off", its start and end on
// CLOCK_MONOTONIC (perf record -k CLOCK_MONOTONIC) in nanoseconds, and how
// many units it did. A profile of the whole machine can then be split
// between the runs with recording on and off, which share the machine's
// drift: one side at a time, two runs minutes apart differ by more than
// recording costs.
const windowsEnv = "POSTERN_BENCH_WINDOWS"

// runWindows writes run windows to a file; a nil one writes nothing.
type runWindows struct{ f *os.File }

func openWindows(b *testing.B) *runWindows {
	path := os.Getenv(windowsEnv)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatalf("opening %s: %v", windowsEnv, err)
	}
	b.Cleanup(func() { f.Close() })
	return &runWindows{f: f}
}

func (w *runWindows) add(on bool, start, end time.Duration, units int) {
	if w == nil {
		return
	}
	side := "off"
	if on {
		side = "on"
	}
	fmt.Fprintf(w.f, "%s %d %d %d\n", side, start.Nanoseconds(), end.Nanoseconds(), units)
}

// monotonic is CLOCK_MONOTONIC, the clock perf stamps samples with when
// asked to.
func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) //nolint:errcheck // cannot fail for this clock
	return time.Duration(ts.Nano())
}
