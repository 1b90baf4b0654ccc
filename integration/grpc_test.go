package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/internal/sample"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols"
)

// TestGRPCPerMethod: each call is decided on its method over both tunnel
// transports, for unary and streaming calls; refusals are trailers-only
// statuses naming the rule; deadlines and cancellation pass through; the
// upstream sees the gateway's assertion.
func TestGRPCPerMethod(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			env := startHTTP(t, transport)
			g := env.g
			reader := testpb.NewTestServiceClient(grpcConn(t, g, "orders", env.reader))
			writer := testpb.NewTestServiceClient(grpcConn(t, g, "orders", env.writer,
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20))))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			var header metadata.MD
			ctxSpoof := metadata.AppendToOutgoingContext(ctx, sample.AssertionKey, "spoofed")
			resp, err := reader.UnaryCall(ctxSpoof, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&header))
			if err != nil {
				t.Fatalf("reader UnaryCall: %v", err)
			}
			if string(resp.GetPayload().GetBody()) != "hello" {
				t.Errorf("got payload %q, want hello", resp.GetPayload().GetBody())
			}
			if a := header.Get(sample.AssertionKey); len(a) != 1 || a[0] == "spoofed" {
				t.Errorf("upstream saw assertion %q, want one JWT of the gateway's", a)
			} else if c := verifyAssertion(t, g, a[0], "orders"); c.Subject != readerUser {
				t.Errorf("assertion subject: got %q, want %s", c.Subject, readerUser)
			}

			hc := healthpb.NewHealthClient(grpcConn(t, g, "orders", env.reader))
			if h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health: got %v, %v, want SERVING", h, err)
			}

			refused := map[string]struct {
				call func() error
				code codes.Code
				msg  string
			}{
				"reader EmptyCall": {func() error { _, err := reader.EmptyCall(ctx, &testpb.Empty{}); return err },
					codes.PermissionDenied, `rule "grpc-readers" refuses this call: call /grpc.testing.TestService/EmptyCall is not allowed`},
				"reader streaming": {func() error {
					s, err := reader.FullDuplexCall(ctx)
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				}, codes.PermissionDenied, "grpc-readers"},
				"no certificate": {func() error {
					c := testpb.NewTestServiceClient(grpcConn(t, g, "orders", nil))
					_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
					return err
				}, codes.Unauthenticated, "authentication required"},
			}
			for name, tc := range refused {
				t.Run(name, func(t *testing.T) {
					err := tc.call()
					if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
						t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
					}
				})
			}

			// Bidirectional streaming, with large messages.
			s, err := writer.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				size := int32(1 << (10 + 3*i)) // 1 KiB … 4 MiB
				if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: size}}}); err != nil {
					t.Fatal(err)
				}
				r, err := s.Recv()
				if err != nil {
					t.Fatalf("recv %d: %v", i, err)
				}
				if len(r.GetPayload().GetBody()) != int(size) {
					t.Fatalf("recv %d: got %d bytes, want %d", i, len(r.GetPayload().GetBody()), size)
				}
			}
			s.CloseSend()
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after CloseSend: got %v, want EOF", err)
			}

			// Server streaming.
			out, err := writer.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
				ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 20}, {Size: 30}}})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				if _, err := out.Recv(); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
					break
				}
				n++
			}
			if n != 3 {
				t.Errorf("got %d streamed messages, want 3", n)
			}

			// The upstream's own status passes through.
			_, err = writer.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}})
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such order" {
				t.Errorf("got %v, want NotFound from the upstream", err)
			}

			// A deadline reaches the upstream: a stream that waits ends with it.
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			ds, err := writer.FullDuplexCall(dctx)
			if err == nil {
				_, err = ds.Recv()
			}
			dcancel()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("got %v, want DeadlineExceeded", err)
			}

			callSessions(t, g, "orders", func(_ []protocols.HTTPRequestEvent, gs []protocols.GRPCCallEvent) bool {
				var ok, denied, unauth, notFound bool
				for _, e := range gs {
					switch {
					case e.Method == "/grpc.testing.TestService/UnaryCall" && e.Status == 0 && e.Identity == readerUser && e.Verdict == protocols.VerdictAllow:
						ok = true
					case e.Method == "/grpc.testing.TestService/EmptyCall" && e.Status == 7 && e.Rule == "grpc-readers":
						denied = true
					case e.Status == 16 && e.Verdict == protocols.VerdictDeny:
						unauth = true
					case e.Status == 5 && e.Message == "no such order":
						notFound = true
					}
				}
				return ok && denied && unauth && notFound
			})
		})
	}
}

// TestCallRateLimits: an http entry's and a grpc entry's rates hold each
// identity: 429 and RESOURCE_EXHAUSTED past them.
func TestCallRateLimits(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	limited := issue(t, g, "spiffe://postern.local/workload/batch", "limited")
	c := httpClient(g, limited, true)
	for i := range 3 {
		if r := do(t, c, "GET", serviceURL(g, "api", "/v1/x"), nil); r.status != 200 {
			t.Fatalf("request %d: got %d, want 200", i, r.status)
		}
	}
	r := do(t, c, "GET", serviceURL(g, "api", "/v1/x"), nil)
	if msg, rule := r.refusal(t); r.status != 429 || rule != "limited" || !strings.Contains(msg, "3/m") || r.header.Get("Retry-After") == "" {
		t.Fatalf("got %d %q rule %q, want 429 naming rule limited and 3/m, with Retry-After", r.status, msg, rule)
	}
	tc := testpb.NewTestServiceClient(grpcConn(t, g, "orders", limited))
	ctx := context.Background()
	for i := range 2 {
		if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "limited") {
		t.Fatalf("got %v, want ResourceExhausted naming rule limited", err)
	}
}

// TestGRPCClientStreaming: a client-streaming call is decided once and its
// messages all reach the upstream.
func TestGRPCClientStreaming(t *testing.T) {
	env := startHTTP(t, "quic")
	c := testpb.NewTestServiceClient(grpcConn(t, env.g, "orders", env.writer))
	s, err := c.StreamingInputCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i := range 10 {
		n := 1000 * (i + 1)
		total += n
		if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil || int(resp.GetAggregatedPayloadSize()) != total {
		t.Fatalf("got %v, %v, want an aggregated size of %d", resp, err, total)
	}
}

// TestGRPCWithGrpcurl: grpcurl, through reflection, with the SVID files a
// user gets; reflection is a gRPC method like any other for the policy.
func TestGRPCWithGrpcurl(t *testing.T) {
	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		if grpcurl, err = filepath.Abs("../bin/grpcurl"); err == nil {
			_, err = os.Stat(grpcurl)
		}
	}
	if err != nil {
		t.Fatalf("grpcurl is needed (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4, or make tools): %v", err)
	}
	env := startHTTP(t, "tls")
	g := env.g
	run := func(svid *x509svid.SVID, args ...string) (string, error) {
		dir := t.TempDir()
		if err := pki.WriteFiles(dir, svid, g.srv.Data().CA.Roots()); err != nil {
			t.Fatal(err)
		}
		base := []string{"-max-time", "20", "-cacert", filepath.Join(dir, pki.BundleFile), "-cert", filepath.Join(dir, pki.SVIDFile),
			"-key", filepath.Join(dir, pki.KeyFile), "-servername", "orders.localhost"}
		args = append(base, args...)
		for i, a := range args {
			if a == "ADDR" {
				args[i] = g.addr()
			}
		}
		out, err := exec.Command(grpcurl, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run(env.writer, "ADDR", "list"); err != nil || !strings.Contains(out, "grpc.testing.TestService") {
		t.Errorf("writer list: got %q, %v; want the test service", out, err)
	}
	if out, err := run(env.writer, "-d", `{"payload":{"body":"aGk="}}`, "ADDR", "grpc.testing.TestService/UnaryCall"); err != nil || !strings.Contains(out, `"aGk="`) {
		t.Errorf("writer UnaryCall: got %q, %v; want the payload back", out, err)
	}
	// The reader may not use reflection: grpcurl is told which rule said no.
	if out, err := run(env.reader, "ADDR", "list"); err == nil || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "grpc-readers") {
		t.Errorf("reader list: got %q, %v; want PermissionDenied naming grpc-readers", out, err)
	}
}

// TestGRPCSeveralAgents: the calls of a gRPC service are spread over the
// agents that serve it, though every call of a client travels one HTTP/2
// connection; a call whose agent cannot reach its upstream goes to the
// next agent, and the calls go on when an agent leaves.
func TestGRPCSeveralAgents(t *testing.T) {
	g := startGateway(t, httpPolicy)
	var mu sync.Mutex
	served := map[string]int{}
	upstream := func(name string) string {
		count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			mu.Lock()
			served[name]++
			mu.Unlock()
			return h(ctx, req)
		}
		return startSample(t, func(ctx context.Context, ln net.Listener) error {
			return sample.ServeGRPC(ctx, ln, grpc.ChainUnaryInterceptor(count))
		})
	}
	agents := map[string]*ag{}
	for i, transport := range []string{"quic", "tls"} {
		name := fmt.Sprintf("app%d", i+1)
		agents[name] = startAgent(t, g, name, transport, t.TempDir(),
			agent.Service{Name: "orders", Protocol: "grpc", Address: upstream(name)})
		agents[name].waitConnected(t)
	}
	c := testpb.NewTestServiceClient(grpcConn(t, g, "orders", issue(t, g, readerUser, "readers")))
	calls := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	}
	calls(20)
	mu.Lock()
	if served["app1"] == 0 || served["app2"] == 0 || served["app1"]+served["app2"] != 20 {
		t.Fatalf("calls served by agent: %v, want 20 spread over app1 and app2", served)
	}
	mu.Unlock()

	// An agent whose upstream is down: its turns go to the others.
	deadAddr := closedAddr(t)
	startAgent(t, g, "app3", "tls", t.TempDir(),
		agent.Service{Name: "orders", Protocol: "grpc", Address: deadAddr}).waitConnected(t)
	calls(20)

	// An agent that leaves: once the gateway has seen it go, the others
	// carry every call.
	agents["app1"].stop()
	waitFor(t, 10*time.Second, "the gateway sees app1 leave", func() bool {
		return strings.Contains(g.logs.String(), `msg="agent disconnected" agent=app1 `)
	})
	mu.Lock()
	clear(served)
	mu.Unlock()
	calls(20)
	mu.Lock()
	defer mu.Unlock()
	if served["app1"] != 0 || served["app2"] != 20 {
		t.Fatalf("after app1 left, calls served by agent: %v, want all 20 by app2", served)
	}
}
