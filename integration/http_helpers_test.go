package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway/assertion"
	"github.com/postern/postern/internal/sample"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols"
)

const (
	readerUser = "spiffe://postern.local/user/reader"
	writerUser = "spiffe://postern.local/user/writer"
)

// httpPolicy: readers may GET under /v1 and make two gRPC calls; writers
// may do more; nobody reaches /v1/admin.
const httpPolicy = `rules:
  - name: no-admin
    effect: deny
    identities: ["spiffe://postern.local/**"]
    services: [api]
    http:
      - paths: ["/v1/admin/**"]
  - name: readers
    identities: [group:readers]
    services: [api]
    http:
      - methods: [GET, HEAD]
        paths: ["/v1/**"]
  - name: writers
    identities: [group:writers]
    services: [api]
    http:
      - methods: [GET, POST, PUT]
        paths: ["/v1/**", "/upload", "/stream", "/ws", "/status/*", "/slow"]
  - name: limited
    identities: [group:limited]
    services: [api, orders]
    http:
      - paths: ["/v1/**"]
        rate: 3/m
    grpc:
      - methods: ["/grpc.testing.TestService/*"]
        rate: 2/m
  - name: grpc-readers
    identities: [group:readers]
    services: [orders]
    grpc:
      - methods: ["/grpc.testing.TestService/UnaryCall", "/grpc.health.v1.Health/*"]
  - name: grpc-writers
    identities: [group:writers]
    services: [orders]
`

type httpEnv struct {
	g              *gw
	reader, writer *x509svid.SVID
}

// startHTTP runs a gateway with httpPolicy and an agent that serves the
// sample HTTP service as api and the sample gRPC service as orders.
func startHTTP(t testing.TB, transport string) *httpEnv {
	t.Helper()
	g := startGateway(t, httpPolicy)
	startAgent(t, g, "web1", transport, t.TempDir(),
		agent.Service{Name: "api", Protocol: "http", Address: startSampleHTTP(t)},
		agent.Service{Name: "orders", Protocol: "grpc", Address: startSampleGRPC(t)}).waitConnected(t)
	return &httpEnv{g: g, reader: issue(t, g, readerUser, "readers"), writer: issue(t, g, writerUser, "writers")}
}

func startSampleHTTP(t testing.TB) string { return startSample(t, sample.ServeHTTP) }

func startSampleGRPC(t testing.TB) string {
	return startSample(t, func(ctx context.Context, ln net.Listener) error { return sample.ServeGRPC(ctx, ln) })
}

// startSample runs a sample upstream on a free loopback port until the test
// ends and returns its address.
func startSample(t testing.TB, serve func(context.Context, net.Listener) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// httpClient returns a client of the gateway's HTTPS services with svid
// (nil: no certificate), over HTTP/2 when h2, else HTTP/1.1.
func httpClient(g *gw, svid *x509svid.SVID, h2 bool) *http.Client {
	conf := &tls.Config{RootCAs: g.roots(), NextProtos: []string{"http/1.1"}}
	if svid != nil {
		conf.Certificates = []tls.Certificate{pkitest.TLSCertificate(svid)}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, g.addr())
		}}
	if h2 {
		conf.NextProtos = []string{"h2", "http/1.1"}
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// serviceURL is the https URL of a path of a service behind the gateway.
func serviceURL(g *gw, service, path string) string {
	_, port, _ := net.SplitHostPort(g.addr())
	return "https://" + service + ".localhost:" + port + path
}

// got is one response: its status, headers and body.
type got struct {
	status int
	header http.Header
	body   []byte
}

func (g got) echo(t testing.TB) sample.Echo {
	t.Helper()
	var e sample.Echo
	if err := json.Unmarshal(g.body, &e); err != nil {
		t.Fatalf("status %d, body %q is not an echo: %v", g.status, g.body, err)
	}
	return e
}

// refusal decodes a SPEC §7 refusal body.
func (g got) refusal(t testing.TB) (msg, rule string) {
	t.Helper()
	var b struct{ Error, Rule string }
	if err := json.Unmarshal(g.body, &b); err != nil {
		t.Fatalf("status %d, body %q is not a refusal: %v", g.status, g.body, err)
	}
	return b.Error, b.Rule
}

func do(t testing.TB, c *http.Client, method, url string, body io.Reader, header ...string) got {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return got{status: resp.StatusCode, header: resp.Header, body: b}
}

// grpcConn dials a gRPC service through the gateway with svid (nil: no
// certificate).
func grpcConn(t testing.TB, g *gw, service string, svid *x509svid.SVID, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conf := &tls.Config{RootCAs: g.roots(), ServerName: service + ".localhost"}
	if svid != nil {
		conf.Certificates = []tls.Certificate{pkitest.TLSCertificate(svid)}
	}
	cc, err := grpc.NewClient("passthrough:///"+g.addr(), append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(conf))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// callSessions waits until the recordings hold ended sessions of service
// whose events satisfy done, and returns the service's sessions.
func callSessions(t testing.TB, g *gw, service string, done func(http []protocols.HTTPRequestEvent, grpc []protocols.GRPCCallEvent) bool) []recorded {
	t.Helper()
	var out []recorded
	waitFor(t, 10*time.Second, "recorded requests of "+service, func() bool {
		all, err := readRecordings(g.srv.Data().RecordingsPath())
		if err != nil {
			return false
		}
		out = out[:0]
		var hs []protocols.HTTPRequestEvent
		var gs []protocols.GRPCCallEvent
		for _, r := range all {
			if r.start.Service == service {
				out = append(out, r)
				hs = append(hs, r.http...)
				gs = append(gs, r.grpc...)
			}
		}
		return done(hs, gs)
	})
	return out
}

// verifyAssertion checks a Postern-Jwt-Assertion as an upstream would: with
// the keys the gateway publishes at its JWKS URL, fetched over HTTPS.
func verifyAssertion(t testing.TB, g *gw, token, audience string) *assertion.ParsedClaims {
	t.Helper()
	r := do(t, httpClient(g, nil, false), "GET", serviceURLHost(g, "localhost", assertion.JWKSPath), nil)
	if r.status != 200 {
		t.Fatalf("fetching JWKS: got %d %s", r.status, r.body)
	}
	c, err := assertion.Verify(token, r.body, audience, time.Now())
	if err != nil {
		t.Fatalf("verifying assertion: %v", err)
	}
	return c
}

// serviceURLHost is the https URL of path at host (a service name with the
// public name, or the public name itself) on the gateway's port.
func serviceURLHost(g *gw, host, path string) string {
	_, port, _ := net.SplitHostPort(g.addr())
	return "https://" + host + ":" + port + path
}
