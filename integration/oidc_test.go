package integration

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/bearer"
	"github.com/postern/postern/internal/oidctest"
	"github.com/postern/postern/internal/sample"
	"github.com/postern/postern/protocols"
)

// withOIDC makes the gateway trust the issuers.
func withOIDC(issuers ...bearer.IssuerConfig) gwOption {
	return func(c *gateway.Config) { c.OIDC = issuers }
}

// authSeen records the authorization metadata that reached a gRPC upstream.
type authSeen struct {
	mu    sync.Mutex
	calls int
	auth  []string
}

func (a *authSeen) get() (calls int, auth []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls, slices.Clone(a.auth)
}

// startSampleGRPCSeeing runs the sample gRPC service, recording in seen the
// authorization metadata of every call that reaches it.
func startSampleGRPCSeeing(t testing.TB, seen *authSeen) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		seen.mu.Lock()
		seen.calls++
		seen.auth = append(seen.auth, md.Get("authorization")...)
		seen.mu.Unlock()
		return h(ctx, req)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sample.ServeGRPC(ctx, ln, grpc.ChainUnaryInterceptor(record)); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestOIDCBearer: a client with no certificate authenticates each request
// with a JWT that a real OpenID provider (running in process on loopback)
// issued through the client-credentials grant. The gateway maps it to a
// SPIFFE ID with the token's groups, which the policy decides on and the
// upstream's assertion carries; the token never reaches the upstream.
// Forged, expired, misdirected and foreign tokens are refused (401,
// UNAUTHENTICATED) with the reason in the audit trail.
func TestOIDCBearer(t *testing.T) {
	op := oidctest.Start(t,
		oidctest.Client{ID: "ci-reader", Secret: "reader-secret", Groups: []string{"readers"}},
		oidctest.Client{ID: "ci-nobody", Secret: "nobody-secret"},
		oidctest.Client{ID: "ci-billing", Secret: "billing-secret", Groups: []string{"readers"}, Audience: []string{"billing"}})
	// Another provider the gateway does not trust, with a client of the same
	// name and groups.
	foreign := oidctest.Start(t, oidctest.Client{ID: "ci-reader", Secret: "reader-secret", Groups: []string{"readers"}})

	g := startGateway(t, httpPolicy, withOIDC(bearer.IssuerConfig{
		Issuer:   op.Issuer(),
		Audience: oidctest.Audience,
		Identity: "spiffe://postern.local/workload/{sub}",
	}))
	seen := &authSeen{}
	startAgent(t, g, "web1", "tls", t.TempDir(),
		agent.Service{Name: "api", Protocol: "http", Address: startSampleHTTP(t)},
		agent.Service{Name: "orders", Protocol: "grpc", Address: startSampleGRPCSeeing(t, seen)}).waitConnected(t)

	const bot = "spiffe://postern.local/workload/ci-reader"
	token := op.Token(t, "ci-reader")
	if strings.Count(token, ".") != 2 {
		t.Fatalf("the OP's access token %q is not a JWT", token)
	}
	c := httpClient(g, nil, true)
	url := serviceURL(g, "api", "/v1/orders/7")

	// The gateway fetches the OP's keys in the background; until they are
	// in, the token is refused.
	var r got
	waitFor(t, 20*time.Second, "the OP's keys loaded by the gateway", func() bool {
		r = do(t, c, "GET", url, nil, "Authorization", "Bearer "+token)
		return r.status != 401
	})
	if r.status != 200 {
		t.Fatalf("GET with the OP's token: got %d %s, want 200", r.status, r.body)
	}
	e := r.echo(t)
	if len(e.Headers["Authorization"]) != 0 {
		t.Errorf("the upstream saw the bearer token: %q", e.Headers["Authorization"])
	}
	if a := e.Headers["Postern-Jwt-Assertion"]; len(a) != 1 {
		t.Errorf("upstream saw assertions %q, want one", a)
	} else if cl := verifyAssertion(t, g, a[0], "api"); cl.Subject != bot || !slices.Equal(cl.Groups, []string{"readers"}) {
		t.Errorf("assertion: got %+v, want sub %s, groups [readers]", cl, bot)
	}

	// The token's groups are what the policy decides on.
	if r := do(t, c, "POST", url, nil, "Authorization", "Bearer "+token); r.status != 403 {
		t.Errorf("POST with a reader's token: got %d %s, want 403", r.status, r.body)
	}
	if r := do(t, c, "GET", url, nil, "Authorization", "Bearer "+op.Token(t, "ci-nobody")); r.status != 403 {
		t.Errorf("GET with a token without groups: got %d %s, want 403", r.status, r.body)
	}

	// gRPC with the same token in the metadata.
	orders := testpb.NewTestServiceClient(grpcConn(t, g, "orders", nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	withToken := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	var header metadata.MD
	resp, err := orders.UnaryCall(withToken(token), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("gRPC UnaryCall with the OP's token: %v", err)
	}
	if string(resp.GetPayload().GetBody()) != "hello" {
		t.Errorf("got payload %q, want hello", resp.GetPayload().GetBody())
	}
	if a := header.Get(sample.AssertionKey); len(a) != 1 {
		t.Errorf("gRPC upstream saw assertions %q, want one", a)
	} else if cl := verifyAssertion(t, g, a[0], "orders"); cl.Subject != bot || !slices.Equal(cl.Groups, []string{"readers"}) {
		t.Errorf("gRPC assertion: got %+v, want sub %s, groups [readers]", cl, bot)
	}
	if calls, auth := seen.get(); calls != 1 || len(auth) != 0 {
		t.Errorf("gRPC upstream: got %d calls with authorization %q, want 1 call without it", calls, auth)
	}
	if _, err := orders.EmptyCall(withToken(token), &testpb.Empty{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC EmptyCall with a reader's token: got %v, want PermissionDenied", err)
	}

	// Tokens the OP did not issue for us, or did not issue at all.
	key, kid := op.SigningKey(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	expired := op.Claims("ci-reader", "readers")
	past := time.Now().Add(-10 * time.Minute)
	expired["iat"], expired["nbf"], expired["exp"] = past.Unix(), past.Unix(), past.Add(5*time.Minute).Unix()
	refused := map[string]struct {
		token string
		want  string // part of the reason
	}{
		"another audience": {op.Token(t, "ci-billing"), `aud does not contain "postern"`},
		"expired":          {op.Mint(t, expired), "token expired"},
		"alg none": {oidctest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, op.Claims("ci-reader", "readers")),
			`algorithm "none" is not allowed`},
		"HS256 keyed with the RSA public key": {oidctest.Sign(t, jwt.SigningMethodHS256, pubPEM, kid, op.Claims("ci-reader", "readers")),
			`algorithm "HS256" is not allowed`},
		"another OP": {foreign.Token(t, "ci-reader"), `token issuer "` + foreign.Issuer() + `" is not a configured OIDC issuer`},
		"unknown kid": {oidctest.Sign(t, jwt.SigningMethodRS256, key, "rotated-away", op.Claims("ci-reader", "readers")),
			`no key with kid "rotated-away"`},
	}
	t.Run("HTTP", func(t *testing.T) {
		for name, rc := range refused {
			t.Run(name, func(t *testing.T) {
				r := do(t, c, "GET", url, nil, "Authorization", "Bearer "+rc.token)
				msg, rule := r.refusal(t)
				if r.status != 401 || rule != "authentication" || !strings.Contains(msg, rc.want) {
					t.Errorf("got %d %q rule %q, want 401 by authentication saying %q", r.status, msg, rule, rc.want)
				}
				if strings.Contains(string(r.body), rc.token) {
					t.Errorf("the refusal holds the token: %s", r.body)
				}
			})
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		for name, rc := range refused {
			t.Run(name, func(t *testing.T) {
				_, err := orders.UnaryCall(withToken(rc.token), &testpb.SimpleRequest{})
				if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), rc.want) {
					t.Errorf("got %v, want Unauthenticated saying %q", err, rc.want)
				}
			})
		}
	})
	if calls, auth := seen.get(); calls != 1 || len(auth) != 0 {
		t.Errorf("gRPC upstream: got %d calls with authorization %q, want only the first, allowed one", calls, auth)
	}

	// The audit trail: the allowed requests with the mapped identity,
	// authenticated by OIDC, and each refusal with its reason.
	var wants []string
	for _, rc := range refused {
		wants = append(wants, rc.want)
	}
	refusedAll := func(reasons []string) bool {
		for _, w := range wants {
			if !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, w) }) {
				return false
			}
		}
		return true
	}
	callSessions(t, g, "api", func(hs []protocols.HTTPRequestEvent, _ []protocols.GRPCCallEvent) bool {
		var ok bool
		var reasons []string
		for _, e := range hs {
			ok = ok || e.Status == 200 && e.Identity == bot && e.Auth == protocols.AuthOIDC && e.Verdict == protocols.VerdictAllow
			if e.Status == 401 && e.Rule == "authentication" && e.Verdict == protocols.VerdictDeny {
				reasons = append(reasons, e.Reason)
			}
		}
		return ok && refusedAll(reasons)
	})
	callSessions(t, g, "orders", func(_ []protocols.HTTPRequestEvent, gs []protocols.GRPCCallEvent) bool {
		var ok bool
		var reasons []string
		for _, e := range gs {
			ok = ok || e.Status == int(codes.OK) && e.Identity == bot && e.Auth == protocols.AuthOIDC &&
				e.Method == "/grpc.testing.TestService/UnaryCall" && e.Verdict == protocols.VerdictAllow
			if e.Status == int(codes.Unauthenticated) && e.Rule == "authentication" && e.Verdict == protocols.VerdictDeny {
				reasons = append(reasons, e.Reason)
			}
		}
		return ok && refusedAll(reasons)
	})
}
