package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/gateway/assertion"
	"github.com/postern/postern/protocols"
)

func mustJWKS(t testing.TB, g *gw) []byte {
	t.Helper()
	r := do(t, httpClient(g, nil, false), "GET", serviceURLHost(g, "localhost", assertion.JWKSPath), nil)
	if r.status != 200 || r.header.Get("Cache-Control") == "" {
		t.Fatalf("JWKS: got %d (Cache-Control %q), want 200 with a Cache-Control", r.status, r.header.Get("Cache-Control"))
	}
	return r.body
}

// TestHTTPPerRoute: each request is decided on its cleaned path and method
// over HTTP/1.1 and HTTP/2 and both tunnel transports; refusals are SPEC §7
// JSON naming the rule; what reaches the upstream is the cleaned path with
// the gateway's assertion and never the client's.
func TestHTTPPerRoute(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			env := startHTTP(t, transport)
			g := env.g
			for _, h2 := range []bool{false, true} {
				proto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
				t.Run(proto, func(t *testing.T) {
					reader, writer := httpClient(g, env.reader, h2), httpClient(g, env.writer, h2)
					url := func(p string) string { return serviceURL(g, "api", p) }

					r := do(t, reader, "GET", url("/v1/orders/7?x=1"), nil, "Postern-Jwt-Assertion", "spoofed", "Authorization", "Basic app-level")
					if r.status != 200 {
						t.Fatalf("GET: got status %d (%s), want 200", r.status, r.body)
					}
					e := r.echo(t)
					if e.Path != "/v1/orders/7" || e.Query != "x=1" || e.Proto != "HTTP/1.1" {
						t.Errorf("upstream saw path %q query %q proto %q, want /v1/orders/7, x=1, HTTP/1.1", e.Path, e.Query, e.Proto)
					}
					if a := e.Headers["Postern-Jwt-Assertion"]; len(a) != 1 || a[0] == "spoofed" || strings.Count(a[0], ".") != 2 {
						t.Errorf("upstream saw assertion %q, want one JWT of the gateway's", a)
					}
					if a := e.Headers["Postern-Jwt-Assertion"]; len(a) == 1 {
						c := verifyAssertion(t, g, a[0], "api")
						if c.Subject != readerUser || !slices.Equal(c.Groups, []string{"readers"}) || c.Issuer != "spiffe://postern.local/gateway/gateway" {
							t.Errorf("assertion claims: got %+v, want sub %s, groups [readers], iss the gateway", c, readerUser)
						}
						if _, err := assertion.Verify(a[0], mustJWKS(t, g), "orders", time.Now()); err == nil {
							t.Errorf("the assertion for api verified for audience orders")
						}
					}
					if got := e.Headers["Authorization"]; len(got) != 1 || got[0] != "Basic app-level" {
						t.Errorf("upstream saw Authorization %q, want the client's own (it authenticated with its SVID)", got)
					}
					if len(e.Headers["X-Forwarded-For"]) != 1 {
						t.Errorf("upstream saw X-Forwarded-For %q, want the client's address", e.Headers["X-Forwarded-For"])
					}

					if e := do(t, reader, "GET", url("/v1//orders///7/./lines"), nil).echo(t); e.Path != "/v1/orders/7/lines" || e.RawPath != "/v1/orders/7/lines" {
						t.Errorf("upstream saw %q (raw %q), want the cleaned /v1/orders/7/lines", e.Path, e.RawPath)
					}
					if e := do(t, reader, "GET", url("/v1/items/%41%3a"), nil).echo(t); e.RawPath != "/v1/items/A%3A" {
						t.Errorf("upstream saw raw path %q, want /v1/items/A%%3A", e.RawPath)
					}

					refused := map[string]struct {
						c           *http.Client
						method, url string
						status      int
						rule, msg   string
					}{
						"reader POST":              {reader, "POST", url("/v1/orders"), 403, "readers", `request POST "/v1/orders" is not allowed by rule "readers"`},
						"reader outside /v1":       {reader, "GET", url("/v2/orders"), 403, "readers", "not allowed"},
						"admin":                    {writer, "GET", url("/v1/admin/users"), 403, "no-admin", "is denied by rule"},
						"admin by dot segments":    {reader, "GET", url("/v1/x/../admin/users"), 403, "no-admin", "denied"},
						"admin by encoded dots":    {reader, "GET", url("/v1/x/%2e%2E/admin/users"), 403, "no-admin", "denied"},
						"admin by double slash":    {writer, "GET", url("/v1//admin//users"), 403, "no-admin", "denied"},
						"encoded slash":            {reader, "GET", url("/v1/x%2f..%2fadmin"), 400, "", "ambiguous"},
						"encoded backslash":        {reader, "GET", url("/v1/x%5c..%5cadmin"), 400, "", "ambiguous"},
						"climbing above the root":  {reader, "GET", url("/v1/../../etc/passwd"), 400, "", "ambiguous"},
						"no certificate, no token": {httpClient(g, nil, h2), "GET", url("/v1/orders"), 401, "authentication", "authentication required"},
					}
					for name, tc := range refused {
						t.Run(name, func(t *testing.T) {
							r := do(t, tc.c, tc.method, tc.url, nil)
							msg, rule := r.refusal(t)
							if r.status != tc.status || rule != tc.rule || !strings.Contains(msg, tc.msg) {
								t.Fatalf("got %d %q rule %q, want %d containing %q, rule %q", r.status, msg, rule, tc.status, tc.msg, tc.rule)
							}
							if tc.status == 401 && r.header.Get("Www-Authenticate") == "" {
								t.Errorf("401 without WWW-Authenticate")
							}
						})
					}

					// Bodies stream both ways.
					body := make([]byte, 8<<20)
					rand.Read(body)
					sum := sha256.Sum256(body)
					if e := do(t, writer, "POST", url("/upload"), bytes.NewReader(body)).echo(t); e.BodyBytes != int64(len(body)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
						t.Errorf("upstream got %d bytes sha %s, want %d sha %x", e.BodyBytes, e.BodySHA256, len(body), sum)
					}
					if r := do(t, writer, "GET", url("/stream?n=64&size=65536"), nil); r.status != 200 || len(r.body) != 64*65536 {
						t.Errorf("stream: got %d, %d bytes, want 200, %d bytes", r.status, len(r.body), 64*65536)
					}
					if r := do(t, writer, "GET", url("/status/503"), nil); r.status != 503 {
						t.Errorf("status: got %d, want the upstream's 503", r.status)
					}
				})
			}

			// Every request is in the audit trail, allowed or refused.
			callSessions(t, g, "api", func(hs []protocols.HTTPRequestEvent, _ []protocols.GRPCCallEvent) bool {
				var ok200, admin, bad, unauth, upload bool
				for _, e := range hs {
					switch {
					case e.Status == 200 && e.Path == "/v1/orders/7" && e.Identity == readerUser && e.Verdict == protocols.VerdictAllow && e.Auth == protocols.AuthSVID && e.Rule == "readers":
						ok200 = true
					case e.Status == 403 && e.Rule == "no-admin" && e.Path == "/v1/admin/users" && e.Verdict == protocols.VerdictDeny:
						admin = true
					case e.Status == 400 && e.Verdict == protocols.VerdictDeny:
						bad = true
					case e.Status == 401 && e.Identity == "":
						unauth = true
					case e.Path == "/upload" && e.BytesIn == 8<<20:
						upload = true
					}
				}
				return ok200 && admin && bad && unauth && upload
			})
		})
	}
}
