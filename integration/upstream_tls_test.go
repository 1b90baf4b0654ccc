package integration

import (
	"context"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/internal/sample"
)

// TestUpstreamTLS: the agent speaks TLS to HTTP and gRPC upstreams that
// want it (ALPN http/1.1 and h2), verifying their certificates, and refuses
// an upstream whose certificate does not verify.
func TestUpstreamTLS(t *testing.T) {
	web := httptest.NewUnstartedServer(sample.HTTPHandler())
	web.StartTLS()
	t.Cleanup(web.Close)
	pool := x509.NewCertPool()
	pool.AddCert(web.Certificate())

	// A gRPC upstream over TLS with the same certificate.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := sample.NewGRPCServer(grpc.Creds(credentials.NewServerTLSFromCert(&web.TLS.Certificates[0])))
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	g := startGateway(t, httpPolicy)
	wrongPool := x509.NewCertPool() // trusts nothing the upstream has
	startAgent(t, g, "tls-up", "tls", t.TempDir(),
		agent.Service{Name: "api", Protocol: "http", Address: web.Listener.Addr().String(),
			TLS: &agent.UpstreamTLS{RootCAs: pool, ServerName: "example.com"}},
		agent.Service{Name: "orders", Protocol: "grpc", Address: ln.Addr().String(),
			TLS: &agent.UpstreamTLS{RootCAs: pool, ServerName: "example.com"}},
		agent.Service{Name: "untrusted", Protocol: "http", Address: web.Listener.Addr().String(),
			TLS: &agent.UpstreamTLS{RootCAs: wrongPool, ServerName: "example.com"}}).waitConnected(t)
	writer := issue(t, g, writerUser, "writers", "ops")

	r := do(t, httpClient(g, writer, true), "GET", serviceURL(g, "api", "/v1/orders/7"), nil)
	if r.status != 200 {
		t.Fatalf("HTTP over upstream TLS: got %d %s, want 200", r.status, r.body)
	}
	if e := r.echo(t); e.Proto != "HTTP/1.1" || len(e.Headers["Postern-Jwt-Assertion"]) != 1 {
		t.Errorf("upstream saw proto %q and assertion %q, want HTTP/1.1 and one assertion", e.Proto, e.Headers["Postern-Jwt-Assertion"])
	}
	tc := testpb.NewTestServiceClient(grpcConn(t, g, "orders", writer))
	if _, err := tc.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
		t.Errorf("gRPC over upstream TLS: %v", err)
	}
	g.writePolicy(t, httpPolicy+`  - name: ops-untrusted
    identities: [group:ops]
    services: [untrusted]
`)
	waitFor(t, 5*time.Second, "policy reloaded", func() bool {
		return do(t, httpClient(g, writer, false), "GET", serviceURL(g, "untrusted", "/"), nil).status != 403
	})
	if r := do(t, httpClient(g, writer, false), "GET", serviceURL(g, "untrusted", "/"), nil); r.status != 502 {
		t.Errorf("an upstream whose certificate does not verify: got %d %s, want 502", r.status, r.body)
	}
}
