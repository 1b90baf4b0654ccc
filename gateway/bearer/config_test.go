package bearer

import (
	"strings"
	"testing"
)

func TestIssuerConfigValidate(t *testing.T) {
	good := IssuerConfig{
		Issuer:   "https://idp.example.com",
		Audience: "postern",
		Identity: "spiffe://postern.local/workload/{sub}",
	}
	tests := map[string]struct {
		mod  func(*IssuerConfig)
		want string // "" means valid; else part of the error
	}{
		"minimal": {mod: func(*IssuerConfig) {}},
		"everything": {mod: func(c *IssuerConfig) {
			c.JWKSURL = "https://idp.example.com/keys"
			c.Algorithms = []string{"ES384", "EdDSA"}
			c.GroupsClaim = "roles"
		}},
		"http on loopback":      {mod: func(c *IssuerConfig) { c.Issuer = "http://127.0.0.1:5556/dex" }},
		"http on localhost":     {mod: func(c *IssuerConfig) { c.Issuer = "http://localhost:9998/" }},
		"claim template":        {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/user/okta-{claim:uid}" }},
		"two placeholders":      {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:org}/{sub}" }},
		"no placeholder":        {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/github-actions" }},
		"no issuer":             {mod: func(c *IssuerConfig) { c.Issuer = "" }, want: "issuer: required"},
		"http issuer":           {mod: func(c *IssuerConfig) { c.Issuer = "http://idp.example.com" }, want: "issuer \"http://idp.example.com\": must be https"},
		"issuer with a query":   {mod: func(c *IssuerConfig) { c.Issuer = "https://idp.example.com/?x=1" }, want: "issuer"},
		"issuer not a URL":      {mod: func(c *IssuerConfig) { c.Issuer = "idp.example.com" }, want: "issuer \"idp.example.com\": no host"},
		"no audience":           {mod: func(c *IssuerConfig) { c.Audience = "" }, want: "audience: required"},
		"http jwks_url":         {mod: func(c *IssuerConfig) { c.JWKSURL = "http://idp.example.com/keys" }, want: "jwks_url"},
		"alg none":              {mod: func(c *IssuerConfig) { c.Algorithms = []string{"RS256", "none"} }, want: `algorithms: "none" is never allowed`},
		"alg HS256":             {mod: func(c *IssuerConfig) { c.Algorithms = []string{"HS256"} }, want: `algorithms: "HS256" is never allowed`},
		"alg hs512 lower case":  {mod: func(c *IssuerConfig) { c.Algorithms = []string{"hs512"} }, want: "never allowed"},
		"unknown alg":           {mod: func(c *IssuerConfig) { c.Algorithms = []string{"RS1"} }, want: `algorithms: "RS1" is not one of`},
		"no identity":           {mod: func(c *IssuerConfig) { c.Identity = "" }, want: "identity: required"},
		"other trust domain":    {mod: func(c *IssuerConfig) { c.Identity = "spiffe://evil.test/workload/{sub}" }, want: "must start with spiffe://postern.local/"},
		"placeholder in the td": {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local{sub}/workload/x" }, want: "must start with"},
		"agent identity":        {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/agent/{sub}" }, want: "/user/ or /workload/"},
		"placeholder as kind":   {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/{sub}/x" }, want: "/user/ or /workload/"},
		"kind only":             {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/" }, want: "no name"},
		"unknown placeholder":   {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{email}" }, want: "unknown placeholder {email}"},
		"empty claim name":      {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:}" }, want: "unknown placeholder"},
		"unclosed":              {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{sub" }, want: `"{" without "}"`},
		"nested":                {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:{sub}}" }, want: `"{" without "}"`},
		"stray close":           {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/sub}" }, want: `"}" without "{"`},
		"bad literal":           {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/a b/{sub}" }, want: "does not make a valid SPIFFE ID"},
		"empty segment":         {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload//{sub}" }, want: "does not make a valid SPIFFE ID"},
		"trailing slash":        {mod: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{sub}/" }, want: "does not make a valid SPIFFE ID"},
		"groups claim spaces":   {mod: func(c *IssuerConfig) { c.GroupsClaim = " groups" }, want: "groups_claim"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate(testTD)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && err == nil:
				t.Fatalf("got valid, want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ic := IssuerConfig{Issuer: "https://idp.example.com", Audience: "postern", Identity: "spiffe://postern.local/workload/{sub}"}
	tests := map[string]struct {
		c    Config
		want string
	}{
		"no issuers":        {c: Config{TrustDomain: testTD}},
		"one issuer":        {c: Config{TrustDomain: testTD, OIDC: []IssuerConfig{ic}}},
		"no trust domain":   {c: Config{OIDC: []IssuerConfig{ic}}, want: "trust domain: required"},
		"issuer twice":      {c: Config{TrustDomain: testTD, OIDC: []IssuerConfig{ic, ic}}, want: `oidc[1]: issuer "https://idp.example.com": listed twice`},
		"bad second issuer": {c: Config{TrustDomain: testTD, OIDC: []IssuerConfig{ic, {Issuer: "https://b.example"}}}, want: "oidc[1]: audience: required"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
