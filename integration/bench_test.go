package integration

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/protocols/tunnel"
)

// benchWrite is the size of one client write in BenchmarkChain.
const benchWrite = 1 << 20

// benchIdentity reaches every service through basePolicy's ops-all rule.
const benchIdentity = "spiffe://postern.local/user/bench"

// BenchmarkChain measures bulk throughput one way, client → gateway → agent
// → sink, over each tunnel transport, and the same sink reached directly
// over loopback TCP as the baseline. The sink discards what it reads and, at
// the client's half-close, answers with the byte count, so the timed part
// ends when the last byte has arrived, not when it left the client. Each run
// of a sub-benchmark uses one fresh connection, opened before the timer
// starts.
func BenchmarkChain(b *testing.B) {
	sink := startCountingSink(b)

	b.Run("direct", func(b *testing.B) {
		benchBulk(b, func() (net.Conn, error) {
			return net.DialTimeout("tcp", sink, 5*time.Second)
		})
	})
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC} {
		b.Run(transport, func(b *testing.B) {
			g, svid := startBenchChain(b, transport,
				agent.Service{Name: "sink", Protocol: "tcp", Address: sink}, sinkReachable)
			benchBulk(b, func() (net.Conn, error) {
				return dialService(g, "sink", svid)
			})
		})
	}
}

// BenchmarkConnect measures what a new client connection costs through each
// transport: the client's TLS handshake with the gateway, authorization, a
// new tunnel stream to the agent, the agent's connection to the echo
// service, and one byte there and back.
func BenchmarkConnect(b *testing.B) {
	echo := startEcho(b)
	for _, transport := range []string{tunnel.TLS, tunnel.QUIC} {
		b.Run(transport, func(b *testing.B) {
			g, svid := startBenchChain(b, transport, echoService(echo), echoOnce)
			one := []byte{'x'}
			got := make([]byte, 1)
			b.ReportAllocs()
			for b.Loop() {
				c, err := dialService(g, "echo", svid)
				if err != nil {
					b.Fatalf("dialing: %v", err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(one); err != nil {
					b.Fatalf("writing: %v", err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatalf("reading echo: %v", err)
				}
				c.Close()
			}
		})
	}
}

// startBenchChain starts a gateway and one agent over transport that serves
// svc, waits until a client can reach svc, and returns the gateway and a
// client SVID allowed to reach it. Everything stops when b ends.
func startBenchChain(b *testing.B, transport string, svc agent.Service,
	reachable func(*gw, string, *x509svid.SVID) error) (*gw, *x509svid.SVID) {
	b.Helper()
	g := startGateway(b, basePolicy)
	a := startAgent(b, g, "bench-"+transport, transport, b.TempDir(), svc)
	if got := a.waitConnected(b); got != transport {
		b.Fatalf("got transport %q, want %q", got, transport)
	}
	svid := issue(b, g, benchIdentity, "ops")
	waitFor(b, 10*time.Second, svc.Name+" reachable", func() bool { return reachable(g, svc.Name, svid) == nil })
	return g, svid
}

// benchBulk writes b.N chunks of benchWrite bytes on one connection from
// dial, half-closes it and waits for the sink's byte count.
func benchBulk(b *testing.B, dial func() (net.Conn, error)) {
	b.Helper()
	c, err := dial()
	if err != nil {
		b.Fatalf("dialing: %v", err)
	}
	defer c.Close()
	// Finish a TLS handshake before the timer starts.
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			b.Fatalf("handshaking: %v", err)
		}
	}
	buf := bulkBuffer()
	b.SetBytes(benchWrite)
	b.ResetTimer()
	if err := sendBulk(c, buf, b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// startCountingSink runs a TCP service that discards what it reads and, at
// EOF, writes the number of bytes it read (8 bytes, big endian) and closes.
func startCountingSink(b *testing.B) string {
	b.Helper()
	return serveTCP(b, func(c net.Conn) {
		// The same buffer size for every path, so the sink costs the same
		// whoever feeds it.
		n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 256<<10))
		c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	})
}

// sinkReachable checks that a client gets through to the counting sink: an
// empty upload is answered with a zero count.
func sinkReachable(g *gw, service string, svid *x509svid.SVID) error {
	c, err := dialService(g, service, svid)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("half-closing: %w", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("reading the sink's count: %w", err)
	}
	if n := binary.BigEndian.Uint64(got[:]); n != 0 {
		return fmt.Errorf("got count %d, want 0", n)
	}
	return nil
}

// bulkBuffer returns a client write of BenchmarkChain.
func bulkBuffer() []byte {
	buf := make([]byte, benchWrite)
	for i := range buf {
		buf[i] = byte(i)
	}
	return buf
}

// sendBulk writes buf chunks times on c, half-closes it and checks the
// sink's byte count.
func sendBulk(c net.Conn, buf []byte, chunks int) error {
	var sent int64
	for range chunks {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return fmt.Errorf("writing: %w", err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return fmt.Errorf("half-closing: %w", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("reading the sink's count: %w", err)
	}
	if n := int64(binary.BigEndian.Uint64(got[:])); n != sent {
		return fmt.Errorf("sink got %d bytes, want %d", n, sent)
	}
	return nil
}
