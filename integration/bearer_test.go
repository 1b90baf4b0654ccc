package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/bearer"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// apiKey makes and stores an API key for id with groups, as postern apikey
// create does, and returns it with its key id.
func apiKey(t testing.TB, g *gw, id string, groups ...string) (key, keyID string) {
	t.Helper()
	key, rec, err := bearer.NewAPIKey(spiffeid.RequireFromString(id), groups, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Data().Store.CreateAPIKey(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key, rec.KeyID
}

// TestAPIKeys: a client with no certificate authenticates each request with
// an API key; the key's identity and groups are what the policy decides on
// and what the upstream's assertion says; the key itself never reaches the
// upstream; a revoked or forged key is refused (401, UNAUTHENTICATED).
func TestAPIKeys(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	const bot = "spiffe://postern.local/workload/bot"
	key, keyID := apiKey(t, g, bot, "readers")
	c := httpClient(g, nil, true)
	url := serviceURL(g, "api", "/v1/orders/7")

	r := do(t, c, "GET", url, nil, "Authorization", "Bearer "+key)
	if r.status != 200 {
		t.Fatalf("with the key: got %d %s, want 200", r.status, r.body)
	}
	e := r.echo(t)
	if len(e.Headers["Authorization"]) != 0 {
		t.Errorf("the upstream saw the API key: %q", e.Headers["Authorization"])
	}
	if a := e.Headers["Postern-Jwt-Assertion"]; len(a) != 1 {
		t.Errorf("no assertion at the upstream")
	} else if cl := verifyAssertion(t, g, a[0], "api"); cl.Subject != bot || len(cl.Groups) != 1 || cl.Groups[0] != "readers" {
		t.Errorf("assertion: got %+v, want sub %s, groups [readers]", cl, bot)
	}
	if r := do(t, c, "POST", url, nil, "Authorization", "Bearer "+key); r.status != 403 {
		t.Errorf("POST with a reader's key: got %d, want 403", r.status)
	}

	// gRPC with the same key in the metadata.
	tc := testpb.NewTestServiceClient(grpcConn(t, g, "orders", nil))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
	if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Errorf("gRPC with the key: %v", err)
	}

	forged := key[:len(key)-4] + "AAAA"
	if strings.HasSuffix(key, "AAAA") {
		forged = key[:len(key)-4] + "BBBB"
	}
	refused := map[string]string{
		"forged secret": forged,
		"unknown key":   "pk_zzzzzzzzzzzz_" + strings.Repeat("A", 43),
		"not a key":     "hello",
	}
	for name, tok := range refused {
		t.Run(name, func(t *testing.T) {
			r := do(t, c, "GET", url, nil, "Authorization", "Bearer "+tok)
			if msg, rule := r.refusal(t); r.status != 401 || rule != "authentication" || msg == "" {
				t.Fatalf("got %d %q rule %q, want 401 by authentication", r.status, msg, rule)
			}
		})
	}

	if err := g.srv.Data().Store.RevokeAPIKey(context.Background(), keyID, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "revocation in force", func() bool {
		return do(t, c, "GET", url, nil, "Authorization", "Bearer "+key).status == 401
	})
	if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC with a revoked key: got %v, want Unauthenticated", err)
	}

	callSessions(t, g, "api", func(hs []protocols.HTTPRequestEvent, _ []protocols.GRPCCallEvent) bool {
		var ok, revoked bool
		for _, e := range hs {
			ok = ok || e.Status == 200 && e.Identity == bot && e.Auth == protocols.AuthAPIKey
			revoked = revoked || e.Status == 401 && strings.Contains(e.Reason, "revoked")
		}
		return ok && revoked
	})

	// An auditor finds the HTTP sessions the key was used in by its
	// identity, though their connections presented no certificate.
	c.CloseIdleConnections()
	waitFor(t, 10*time.Second, "sealed sessions indexed under the key's identity", func() bool {
		ss, err := g.srv.Data().Store.Sessions(context.Background(),
			store.SessionFilter{Identity: bot, Service: "api", Status: audit.StatusSealed})
		return err == nil && len(ss) > 0 && ss[0].Identity == bot
	})
}
