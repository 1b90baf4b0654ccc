package bearer

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkAuthenticateJWT: the cost of a JWT once the issuer's JWKS is
// cached: parsing, signature check, claims and identity mapping.
func BenchmarkAuthenticateJWT(b *testing.B) {
	j := startJWKS(b)
	keys := map[string]jwt.SigningMethod{"RS256": jwt.SigningMethodRS256, "ES256": jwt.SigningMethodES256}
	for alg := range keys {
		j.add(b, alg, alg)
	}
	ctx := context.Background()
	a, err := New(ctx, Config{TrustDomain: testTD, OIDC: []IssuerConfig{j.config()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.WaitReady(wctx); err != nil {
		b.Fatal(err)
	}
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			j.mu.Lock()
			key := j.keys[alg]
			j.mu.Unlock()
			token := sign(b, keys[alg], key, alg, jwksClaims())
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(ctx, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAuthenticateAPIKey: the cost of an API key with its lookup in a
// real SQLite store on every request (no cache).
func BenchmarkAuthenticateAPIKey(b *testing.B) {
	d := openStore(b)
	ctx := context.Background()
	a, err := New(ctx, Config{TrustDomain: testTD, APIKeys: d})
	if err != nil {
		b.Fatal(err)
	}
	// Some other keys, so that the lookup is not in a table of one.
	for range 1000 {
		createKey(b, d, "spiffe://postern.local/workload/other", nil)
	}
	key := createKey(b, d, "spiffe://postern.local/workload/ci", nil)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := a.Authenticate(ctx, key); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
