package integration

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
)

// benchHTTPPolicy decides every request of the benchmark's identity by an
// http or grpc entry, so the path of a decision is the one users pay.
const benchHTTPPolicy = `rules:
  - name: bench-http
    identities: [spiffe://postern.local/user/bench]
    services: [api]
    http:
      - methods: [GET]
        paths: ["/v1/**"]
  - name: bench-grpc
    identities: [spiffe://postern.local/user/bench]
    services: [orders]
    grpc:
      - methods: ["/grpc.testing.TestService/UnaryCall"]
  - name: bench-raw
    identities: [spiffe://postern.local/user/bench]
    services: [apiraw, ordersraw]
`

// benchConns is how many client connections (HTTP) or concurrent calls
// (gRPC, on one HTTP/2 connection) the load keeps busy.
const benchConns = 50

// BenchmarkHTTP: GET /v1/orders/7 with keep-alive over 50 HTTP/1.1
// connections, directly to the sample upstream and through Postern over each
// tunnel transport (client TLS with an SVID, per-request policy, assertion,
// audit). relay2, the yardstick, is two plain TCP relays in a row in front
// of the upstream — the two hops of Postern's chain with nothing else.
// tls-raw is Postern's own chain over the TLS tunnel with the service
// declared as plain TCP: the client's TLS, the tunnel and the agent, and
// no HTTP at the gateway — what the layer-7 work costs is the difference
// from tls. revproxy is one hop of httputil.ReverseProxy with TLS in front
// (proxy_yardstick_test.go). Reports requests/s and the p50 and p99
// latency.
func BenchmarkHTTP(b *testing.B) {
	upstream := startSampleHTTP(b)
	for _, path := range []string{"direct", "relay2", "revproxy", tunnel.TLS, tunnel.TLS + "-raw", tunnel.QUIC} {
		b.Run(path, func(b *testing.B) {
			var c *http.Client
			url := "http://" + upstream + "/v1/orders/7"
			switch path {
			case "relay2":
				url = "http://" + relayHops(b, 2, upstream) + "/v1/orders/7"
				fallthrough
			case "direct":
				c = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchConns, MaxConnsPerHost: benchConns}}
			case "revproxy":
				addr, conf := revproxyHTTP(b, upstream)
				c = &http.Client{Transport: &http.Transport{TLSClientConfig: conf, MaxIdleConnsPerHost: benchConns, MaxConnsPerHost: benchConns}}
				url = "https://" + addr + "/v1/orders/7"
			case tunnel.TLS + "-raw":
				g, svid := startBenchHTTP(b, tunnel.TLS, agent.Service{Name: "apiraw", Protocol: "tcp", Address: upstream})
				c = httpClient(g, svid, false)
				tr := c.Transport.(*http.Transport)
				tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = benchConns, benchConns
				url = serviceURL(g, "apiraw", "/v1/orders/7")
			default:
				g, svid := startBenchHTTP(b, path, agent.Service{Name: "api", Protocol: "http", Address: upstream})
				c = httpClient(g, svid, false)
				tr := c.Transport.(*http.Transport)
				tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = benchConns, benchConns
				url = serviceURL(g, "api", "/v1/orders/7")
			}
			get := func() error {
				resp, err := c.Get(url)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return &statusError{resp.StatusCode}
				}
				return nil
			}
			if err := get(); err != nil {
				b.Fatal(err)
			}
			runLoad(b, get)
		})
	}
}

// BenchmarkGRPC: unary calls (a 100-byte payload each way), 50 in flight on
// one client connection, directly, through two plain TCP relays (relay2, as
// in BenchmarkHTTP) and through Postern over each transport, and as a TCP
// service (tls-raw, as in BenchmarkHTTP); revproxy and grpcproxy are one
// hop of a layer-7 gRPC proxy made of x/net's HTTP/2 and
// httputil.ReverseProxy, and of grpc-go (proxy_yardstick_test.go).
func BenchmarkGRPC(b *testing.B) {
	upstream := startSampleGRPC(b)
	for _, path := range []string{"direct", "relay2", "revproxy", "grpcproxy", tunnel.TLS, tunnel.TLS + "-raw", tunnel.QUIC} {
		b.Run(path, func(b *testing.B) {
			var cc *grpc.ClientConn
			addr := upstream
			switch path {
			case "relay2":
				addr = relayHops(b, 2, upstream)
				fallthrough
			case "direct":
				var err error
				if cc, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
			case "revproxy", "grpcproxy":
				proxy := revproxyGRPC
				if path == "grpcproxy" {
					proxy = grpcProxy
				}
				addr, conf := proxy(b, upstream)
				var err error
				if cc, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf))); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
			case tunnel.TLS + "-raw":
				// A TCP service negotiates no ALPN: the client does its own
				// TLS and gives gRPC the connection as a plain one.
				g, svid := startBenchHTTP(b, tunnel.TLS, agent.Service{Name: "ordersraw", Protocol: "tcp", Address: upstream})
				conf := &tls.Config{RootCAs: g.roots(), ServerName: "ordersraw.localhost",
					Certificates: []tls.Certificate{pkitest.TLSCertificate(svid)}}
				var err error
				cc, err = grpc.NewClient("passthrough:///"+g.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
						return (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", addr)
					}))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
			default:
				g, svid := startBenchHTTP(b, path, agent.Service{Name: "orders", Protocol: "grpc", Address: upstream})
				cc = grpcConn(b, g, "orders", svid)
			}
			tc := testpb.NewTestServiceClient(cc)
			req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}
			call := func() error {
				_, err := tc.UnaryCall(context.Background(), req)
				return err
			}
			if err := call(); err != nil {
				b.Fatal(err)
			}
			runLoad(b, call)
		})
	}
}

func startBenchHTTP(b *testing.B, transport string, svc agent.Service) (*gw, *x509svid.SVID) {
	b.Helper()
	g := startGateway(b, benchHTTPPolicy)
	a := startAgent(b, g, "bench-"+transport, transport, b.TempDir(), svc)
	if got := a.waitConnected(b); got != transport {
		b.Fatalf("got transport %q, want %q", got, transport)
	}
	return g, issue(b, g, benchIdentity)
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

// runLoad runs b.N calls of op from benchConns goroutines and reports
// requests/s, p50 and p99.
func runLoad(b *testing.B, op func() error) {
	b.Helper()
	var next atomic.Int64
	lat := make([][]time.Duration, benchConns)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := range benchConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
