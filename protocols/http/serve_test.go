package http

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols"
)

var td = spiffeid.RequireTrustDomainFromString("postern.local")

// fixture is a loopback TLS listener whose connections are served by Serve
// with cfg, in front of a real upstream (cfg.Transport's, when it is set).
type fixture struct {
	addr     string
	roots    *tls.Config // client config trusting the server
	events   chan protocols.Event
	upstream *httptest.Server
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	ca := pkitest.NewCA(t, td)
	server := ca.SVID(t, spiffeid.RequireFromPath(td, "/gateway/gw"), pkitest.DNSNames("api.localhost"))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.EscapedPath())
		w.Header().Set("X-Assertion", r.Header.Get(AssertionHeader))
		w.Header().Set("X-Authorization", r.Header.Get("Authorization"))
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Body", strconv.FormatInt(n, 10))
		io.WriteString(w, "upstream body")
	}))
	t.Cleanup(upstream.Close)
	f := &fixture{events: make(chan protocols.Event, 1000), upstream: upstream}
	cfg.Service = "api"
	cfg.Recorder = protocols.RecorderFunc(func(e protocols.Event) {
		select {
		case f.events <- e:
		default:
		}
	})
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", upstream.Listener.Addr().String())
		}}
	}
	if cfg.Assert == nil {
		cfg.Assert = func(_ time.Time, c Caller, aud string) (string, error) {
			return "asserted:" + c.ID.String() + ":" + aud, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	srvConf := &tls.Config{Certificates: []tls.Certificate{pkitest.TLSCertificate(server)}, NextProtos: []string{"h2", "http/1.1"}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, srvConf)
				if tc.HandshakeContext(ctx) != nil {
					c.Close()
					return
				}
				Serve(ctx, tc, cfg)
			}()
		}
	}()
	f.addr = ln.Addr().String()
	f.roots = &tls.Config{RootCAs: ca.Pool(), ServerName: "api.localhost"}
	return f
}

func (f *fixture) client(h2 bool) *http.Client {
	conf := f.roots.Clone()
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, f.addr)
		}}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

var alice = Caller{ID: spiffeid.RequireFromPath(td, "/user/alice"), Groups: []string{"ops"}, Auth: protocols.AuthSVID}

// allowGET allows GET under /ok and panics on /panic.
var allowGET = protocols.AuthorizerFunc(func(_ context.Context, r protocols.Request) protocols.Decision {
	switch {
	case r.HTTP == nil:
		return protocols.Decision{Rule: "test", Reason: "not an http request"}
	case r.HTTP.Path == "/panic":
		panic("authorizer bug")
	case r.HTTP.Path == "/limited":
		return protocols.Decision{Rule: "rate", Reason: "over the rate", RateLimited: true}
	case r.HTTP.Method == "GET" && strings.HasPrefix(r.HTTP.Path, "/ok"):
		return protocols.Decision{Allow: true, Rule: "ok-rule"}
	}
	return protocols.Decision{Rule: "ok-rule", Reason: "only GET /ok"}
})

// TestServe: decisions, refusals, the assertion and the headers that reach
// the upstream, over HTTP/1.1 and HTTP/2.
func TestServe(t *testing.T) {
	f := newFixture(t, Config{Peer: alice, Authorizer: allowGET})
	for _, h2 := range []bool{false, true} {
		c := f.client(h2)
		tests := map[string]struct {
			method, path string
			header       [2]string
			status       int
			upstreamPath string // "" when refused
			rule         string
		}{
			"allowed":            {method: "GET", path: "/ok/a", status: 200, upstreamPath: "/ok/a"},
			"cleaned":            {method: "GET", path: "/ok//a/./b/../c", status: 200, upstreamPath: "/ok/a/c"},
			"spoofed assertion":  {method: "GET", path: "/ok", header: [2]string{AssertionHeader, "forged"}, status: 200, upstreamPath: "/ok"},
			"denied":             {method: "POST", path: "/ok", status: 403, rule: "ok-rule"},
			"rate limited":       {method: "GET", path: "/limited", status: 429, rule: "rate"},
			"ambiguous":          {method: "GET", path: "/ok/%2f", status: 400},
			"authorizer panics":  {method: "GET", path: "/panic", status: 500, rule: "internal"},
			"after the panic ok": {method: "GET", path: "/ok/again", status: 200, upstreamPath: "/ok/again"},
		}
		for name, tc := range tests {
			t.Run(map[bool]string{false: "h1/", true: "h2/"}[h2]+name, func(t *testing.T) {
				req, _ := http.NewRequest(tc.method, "https://api.localhost"+tc.path, strings.NewReader("body!"))
				if tc.header[0] != "" {
					req.Header.Set(tc.header[0], tc.header[1])
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.status)
				}
				if tc.upstreamPath != "" {
					if got := resp.Header.Get("X-Path"); got != tc.upstreamPath {
						t.Errorf("upstream path: got %q, want %q", got, tc.upstreamPath)
					}
					if got, want := resp.Header.Get("X-Assertion"), "asserted:"+alice.ID.String()+":api"; got != want {
						t.Errorf("upstream assertion: got %q, want %q", got, want)
					}
					return
				}
				var b errorBody
				if err := json.Unmarshal(body, &b); err != nil || b.Error == "" || b.Rule != tc.rule {
					t.Errorf("refusal body %q: got rule %q (%v), want rule %q and an error", body, b.Rule, err, tc.rule)
				}
			})
		}
	}
}

// TestServeBearer: without an SVID each request needs a bearer token; the
// token that authenticated to Postern is not passed on.
func TestServeBearer(t *testing.T) {
	bot := Caller{ID: spiffeid.RequireFromPath(td, "/workload/bot"), Auth: protocols.AuthAPIKey}
	f := newFixture(t, Config{Authorizer: allowGET, Authenticate: func(_ context.Context, token string) (Caller, error) {
		if token != "good" {
			return Caller{}, errTest
		}
		return bot, nil
	}})
	c := f.client(true)
	for name, tc := range map[string]struct {
		auth   string
		status int
	}{
		"no token":     {"", 401},
		"wrong scheme": {"Basic good", 401},
		"bad token":    {"Bearer bad", 401},
		"good token":   {"bearer good", 200},
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "https://api.localhost/ok", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 401 && resp.Header.Get("Www-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if tc.status == 200 && resp.Header.Get("X-Authorization") != "" {
				t.Errorf("the upstream got the bearer token %q", resp.Header.Get("X-Authorization"))
			}
		})
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("bad token")

func TestBearer(t *testing.T) {
	tests := map[string]struct {
		header string
		want   string
		ok     bool
	}{
		"bearer":       {header: "Bearer abc.def", want: "abc.def", ok: true},
		"lower case":   {header: "bearer pk_x", want: "pk_x", ok: true},
		"extra spaces": {header: "Bearer   tok  ", want: "tok", ok: true},
		"none":         {},
		"basic":        {header: "Basic dXNlcjpwYXNz"},
		"no token":     {header: "Bearer "},
		"scheme only":  {header: "Bearer"},
		"bearerish":    {header: "Bearerx tok"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := bearer(tc.header)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("got %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestGRPCStatus: refusals are encoded as gRPC asks; statuses are read back
// from headers or trailers.
func TestGRPCStatus(t *testing.T) {
	w := httptest.NewRecorder()
	writeGRPCStatus(w, 7, `rule "x" refuses: 100% sure ünïcode`)
	if w.Code != 200 || w.Header().Get("Grpc-Status") != "7" || w.Header().Get("Content-Type") != "application/grpc" || w.Body.Len() != 0 {
		t.Fatalf("got %d %v body %q, want 200 trailers-only status 7", w.Code, w.Header(), w.Body.String())
	}
	if got, want := w.Header().Get("Grpc-Message"), `rule "x" refuses: 100%25 sure %C3%BCn%C3%AFcode`; got != want {
		t.Errorf("message: got %q, want %q", got, want)
	}
	for name, tc := range map[string]struct {
		h      http.Header
		status int
		code   int
		msg    string
	}{
		"header":        {http.Header{"Grpc-Status": {"5"}, "Grpc-Message": {"not%20found"}}, 200, 5, "not found"},
		"trailer":       {http.Header{http.TrailerPrefix + "Grpc-Status": {"0"}}, 200, 0, ""},
		"malformed":     {http.Header{"Grpc-Status": {"x"}}, 200, 13, `malformed grpc-status "x"`},
		"http 503":      {http.Header{}, 503, 14, "HTTP 503"},
		"http 200 bare": {http.Header{}, 200, 2, "no grpc-status from the upstream (HTTP 200)"},
	} {
		t.Run(name, func(t *testing.T) {
			code, msg := grpcStatus(tc.h, tc.status)
			if code != tc.code || msg != tc.msg {
				t.Fatalf("got %d %q, want %d %q", code, msg, tc.code, tc.msg)
			}
		})
	}
}

// BenchmarkServe: one allowed GET per op over one keep-alive connection,
// through the handler (policy, cleaning, assertion, recording) to a real
// upstream, against the same upstream directly.
func BenchmarkServe(b *testing.B) {
	f := newFixture(b, Config{Peer: alice, Authorizer: allowGET})
	go func() {
		for range f.events {
		}
	}()
	for name, c := range map[string]struct {
		client *http.Client
		url    string
	}{
		"direct":  {&http.Client{}, f.upstream.URL + "/ok/orders/7"},
		"handler": {f.client(false), "https://api.localhost/ok/orders/7"},
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("got %d", resp.StatusCode)
				}
			}
		})
	}
}
