package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/protocols"
)

// TestTCPEndToEnd reaches a TCP service through each transport: echo,
// a 64 MiB transfer with checksums, half-close, many clients at once, and the
// recording of the session.
func TestTCPEndToEnd(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			g := startGateway(t, basePolicy)
			a := startAgent(t, g, "db1", transport, t.TempDir(), echoService(startEcho(t)))
			if got := a.waitConnected(t); got != transport {
				t.Fatalf("got transport %q, want %q", got, transport)
			}
			alice := issue(t, g, "spiffe://postern.local/user/alice")
			waitFor(t, 5*time.Second, "echo reachable", func() bool { return echoOnce(g, "echo", alice) == nil })

			t.Run("bulk with half-close", func(t *testing.T) {
				c, err := dialService(g, "echo", alice)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				const size = 64 << 20
				sent := sha256.New()
				go func() {
					io.CopyN(io.MultiWriter(c, sent), rand.Reader, size)
					c.CloseWrite() // the echo service sees EOF, finishes, closes
				}()
				got := sha256.New()
				n, err := io.Copy(got, c)
				if err != nil {
					t.Fatalf("reading: %v", err)
				}
				if n != size {
					t.Fatalf("got %d bytes back, want %d", n, size)
				}
				if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
					t.Fatal("checksum of echoed data differs from what was sent")
				}
			})

			t.Run("concurrent clients", func(t *testing.T) {
				var wg sync.WaitGroup
				errs := make(chan error, 50)
				for range 50 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- echoOnce(g, "echo", alice)
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
			})

			t.Run("recorded", func(t *testing.T) {
				sessions := recordedSessions(t, g)
				var ok int
				for _, s := range sessions {
					if s.start.Identity == "spiffe://postern.local/user/alice" && s.end != nil && s.end.Outcome == protocols.OutcomeOK {
						ok++
						if s.start.Agent != "db1" || s.start.Transport != transport || s.start.Service != "echo" {
							t.Fatalf("got session start %+v, want agent db1 over %s to echo", s.start, transport)
						}
					}
				}
				if ok < 52 {
					t.Fatalf("got %d recorded ok sessions for alice, want at least 52", ok)
				}
			})
		})
	}
}

type recorded struct {
	id      string
	start   protocols.SessionStart
	end     *protocols.SessionEnd
	denies  []protocols.AuthzDeny
	tcp     int64
	queries []protocols.PostgresQueryEvent
	http    []protocols.HTTPRequestEvent
	grpc    []protocols.GRPCCallEvent
}

// readRecordings reads every recording in dir, ended or not.
func readRecordings(dir string) ([]recorded, error) {
	files, err := audit.List(dir)
	if err != nil {
		return nil, err
	}
	var out []recorded
	for _, f := range files {
		var r recorded
		err := audit.Read(f.Path, func(rec audit.Record) error {
			r.id = rec.Session
			switch rec.Type {
			case protocols.SessionStarted:
				return json.Unmarshal(rec.Data, &r.start)
			case protocols.SessionEnded:
				r.end = &protocols.SessionEnd{}
				return json.Unmarshal(rec.Data, r.end)
			case protocols.AuthzDenied:
				return appendEvent(rec.Data, &r.denies)
			case protocols.TCPData:
				var d protocols.TCPDataEvent
				err := json.Unmarshal(rec.Data, &d)
				r.tcp += d.Bytes
				return err
			case protocols.PostgresQuery:
				return appendEvent(rec.Data, &r.queries)
			case protocols.HTTPRequested:
				return appendEvent(rec.Data, &r.http)
			case protocols.GRPCCalled:
				return appendEvent(rec.Data, &r.grpc)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f.Path, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// recordingTexts returns the decompressed records of every recording in
// dir, by path, for tests that look for what must never be recorded.
func recordingTexts(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, err := audit.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		var b strings.Builder
		if err := audit.Read(f.Path, func(rec audit.Record) error {
			b.Write(rec.Data)
			b.WriteByte('\n')
			return nil
		}); err != nil {
			t.Errorf("reading %s: %v", f.Path, err)
		}
		out[f.Path] = b.String()
	}
	return out
}

// appendEvent decodes one event's data onto the end of list.
func appendEvent[T any](data []byte, list *[]T) error {
	var e T
	err := json.Unmarshal(data, &e)
	*list = append(*list, e)
	return err
}

// recordedSessions reads every finished recording of the gateway, after
// giving the recorder time to flush the sessions that just ended.
func recordedSessions(t testing.TB, g *gw) []recorded {
	t.Helper()
	var out []recorded
	var last error
	waitFor(t, 5*time.Second, "recordings readable and ended", func() bool {
		if out, last = readRecordings(g.srv.Data().RecordingsPath()); last != nil {
			return false
		}
		for _, r := range out {
			if r.end == nil {
				return false
			}
		}
		return true
	})
	return out
}

// TestHalfCloseRequestResponse checks a protocol that sends a request, shuts
// its write side and then reads the whole answer (like `nc -N`).
func TestHalfCloseRequestResponse(t *testing.T) {
	// The service reads to EOF, then answers with the byte count and closes.
	counter := serveTCP(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	})
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			g := startGateway(t, basePolicy)
			a := startAgent(t, g, "counter", transport, t.TempDir(),
				echoService(counter))
			a.waitConnected(t)
			alice := issue(t, g, "spiffe://postern.local/user/alice")
			c, err := dialService(g, "echo", alice)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(bytes.Repeat([]byte("x"), 100000))
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := "read 100000 bytes"; string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
