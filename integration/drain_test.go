package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/internal/sample"
)

// drainAgent runs an agent named name that serves api (HTTP, answering
// its own name and the request's body), orders (gRPC) and echo (TCP), each upstream its own,
// counting in served the calls (key name) and sessions (name/tcp) it got;
// it drains for drain when stopped.
func drainAgent(t *testing.T, g *gw, name, transport string, drain time.Duration, served *counts) *ag {
	t.Helper()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, name+string(body))
	}))
	t.Cleanup(api.Close)
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		served.add(name)
		return h(ctx, req)
	}
	orders := startSample(t, func(ctx context.Context, ln net.Listener) error {
		return sample.ServeGRPC(ctx, ln, grpc.ChainUnaryInterceptor(count))
	})
	echo := serveTCP(t, func(c net.Conn) {
		served.add(name + "/tcp")
		io.Copy(c, c)
	})
	a := runAgent(t, agent.Config{Gateway: g.addr(), Name: name, Token: mint(t, g, name), DataDir: t.TempDir(),
		Transport: transport, Heartbeat: time.Second, DrainTimeout: drain, Services: []agent.Service{
			{Name: "api", Protocol: "http", Address: strings.TrimPrefix(api.URL, "http://")},
			{Name: "orders", Protocol: "grpc", Address: orders},
			echoService(echo)}})
	a.waitConnected(t)
	return a
}

// counts counts by name, safely from many goroutines.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
}

func (c *counts) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// TestAgentDrain: a stopping agent asks the gateway for no new streams;
// the calls, requests and sessions it carries go on to their end while new
// ones go to the other agent, and it leaves as soon as it carries nothing
// — well before its drain timeout.
func TestAgentDrain(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			g := startGateway(t, basePolicy)
			var served counts
			old := drainAgent(t, g, "old", transport, 20*time.Second, &served)
			op := issue(t, g, "spiffe://postern.local/user/op", "ops")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// What the old agent carries when it is told to stop: a
			// bidirectional call, a TCP session, and a kept-alive HTTP
			// connection of the gateway's pool.
			orders := testpb.NewTestServiceClient(grpcConn(t, g, "orders", op))
			stream, err := orders.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip := func(size int32) error {
				if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: size}}}); err != nil {
					return err
				}
				r, err := stream.Recv()
				if err == nil && len(r.GetPayload().GetBody()) != int(size) {
					err = fmt.Errorf("got %d bytes, want %d", len(r.GetPayload().GetBody()), size)
				}
				return err
			}
			if err := roundTrip(10); err != nil {
				t.Fatal(err)
			}
			session, err := dialService(g, "echo", op)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close()
			echoLine := func(line string) error {
				session.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(session, line); err != nil {
					return err
				}
				got := make([]byte, len(line))
				if _, err := io.ReadFull(session, got); err != nil || string(got) != line {
					return fmt.Errorf("got %q, %v; want %q", got, err, line)
				}
				return nil
			}
			if err := echoLine("before\n"); err != nil {
				t.Fatal(err)
			}
			web := httpClient(g, op, false)
			get := func() (string, error) {
				r, err := web.Get(serviceURL(g, "api", "/who"))
				if err != nil {
					return "", err
				}
				defer r.Body.Close()
				b, err := io.ReadAll(r.Body)
				if r.StatusCode != 200 {
					return "", fmt.Errorf("status %d: %s", r.StatusCode, b)
				}
				return string(b), err
			}
			if who, err := get(); err != nil || who != "old" {
				t.Fatalf("got %q, %v; want an answer of old", who, err)
			}

			drainAgent(t, g, "new", transport, 20*time.Second, &served)
			stopped := make(chan time.Time, 1)
			go func() { old.stop(); stopped <- time.Now() }()
			waitFor(t, 10*time.Second, "the gateway sees old drain", func() bool {
				return strings.Contains(g.logs.String(), `msg="agent draining: no new streams go to it" agent=old `)
			})

			// New work goes to the new agent only.
			calls, sessions := served.get("old"), served.get("old/tcp")
			for i := range 10 {
				if _, err := orders.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
					t.Fatalf("call %d while old drains: %v", i, err)
				}
				if who, err := get(); err != nil || who != "new" {
					t.Fatalf("request %d while old drains: got %q, %v; want an answer of new", i, who, err)
				}
				if err := echoOnce(g, "echo", op); err != nil {
					t.Fatalf("session %d while old drains: %v", i, err)
				}
			}
			if n, m := served.get("old")-calls, served.get("old/tcp")-sessions; n != 0 || m != 0 {
				t.Errorf("old got %d calls and %d sessions while draining, want none", n, m)
			}

			// What old carries goes on.
			select {
			case <-stopped:
				t.Fatal("old left while it still carried a call and a session")
			default:
			}
			if err := roundTrip(1 << 16); err != nil {
				t.Fatalf("the call in flight on old, during its drain: %v", err)
			}
			if err := echoLine("during the drain\n"); err != nil {
				t.Fatalf("the session on old, during its drain: %v", err)
			}

			// Once they end, old leaves, long before its timeout.
			stream.CloseSend()
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("ending the call: got %v, want EOF", err)
			}
			session.Close()
			ended := time.Now()
			select {
			case at := <-stopped:
				if d := at.Sub(ended); d > 5*time.Second {
					t.Errorf("old left %v after its last session ended", d)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("old did not leave within 15s of its last session's end")
			}
		})
	}
}

// TestAgentDrainTimeout: a session that does not end keeps a draining
// agent only until its drain timeout.
func TestAgentDrainTimeout(t *testing.T) {
	g := startGateway(t, basePolicy)
	var served counts
	a := drainAgent(t, g, "slow", "tls", 500*time.Millisecond, &served)
	op := issue(t, g, "spiffe://postern.local/user/op", "ops")
	session, err := dialService(g, "echo", op)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	session.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(session, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(session, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not leave within 10s of a 500ms drain timeout")
	}
	// The session held open was closed when the agent left.
	if _, err := io.ReadFull(session, make([]byte, 1)); err == nil {
		t.Fatal("the session outlived its agent")
	}
}

// TestHTTPSeveralAgents: the requests of an HTTP service are spread over
// its agents request by request, though the client keeps one connection;
// a request whose agent cannot reach its upstream goes, body and all, to
// the next agent.
func TestHTTPSeveralAgents(t *testing.T) {
	g := startGateway(t, basePolicy)
	var served counts
	drainAgent(t, g, "one", "tls", -1, &served)
	drainAgent(t, g, "two", "quic", -1, &served)
	deadAddr := closedAddr(t)
	startAgent(t, g, "three", "tls", t.TempDir(),
		agent.Service{Name: "api", Protocol: "http", Address: deadAddr}).waitConnected(t)
	c := httpClient(g, issue(t, g, "spiffe://postern.local/user/op", "ops"), false)
	who := map[string]int{}
	for i := range 30 {
		body := fmt.Sprintf(":request %d", i)
		r, err := c.Post(serviceURL(g, "api", "/orders"), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(r.Body)
		r.Body.Close()
		name, rest, _ := strings.Cut(string(got), ":")
		if r.StatusCode != 200 || ":"+rest != body {
			t.Fatalf("request %d: got %d %q, want 200 and the body back", i, r.StatusCode, got)
		}
		who[name]++
	}
	if who["one"] == 0 || who["two"] == 0 || who["one"]+who["two"] != 30 {
		t.Fatalf("requests answered by agent: %v, want 30 spread over one and two", who)
	}
}
