// Package enroll is the wire of the gateway's HTTPS API that agents (and
// other SVID holders) use to get and renew SVIDs: the paths, the ALPN that
// reaches the API on the gateway's shared port, and the JSON bodies. The
// gateway serves it and the agent calls it; both import this package so the
// two sides cannot drift apart.
package enroll

// ALPN is offered (beside http/1.1, which is then spoken) to reach the
// gateway's API whatever name the client dialed.
const ALPN = "postern-api/1"

// API paths.
const (
	PathBundle = "/v1/bundle" // GET: the trust roots, PEM; no authentication
	PathEnroll = "/v1/enroll" // POST EnrollRequest with a join token
	PathRenew  = "/v1/renew"  // POST RenewRequest over mTLS with the current SVID
)

// EnrollRequest trades a join token and a CSR (DER) for an SVID.
type EnrollRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"`
}

// RenewRequest asks for a new SVID for the caller's identity.
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// Response answers both: the SVID chain and the trust roots as PEM, or an
// error.
type Response struct {
	SVID   string `json:"svid,omitempty"`
	Bundle string `json:"bundle,omitempty"`
	Error  string `json:"error,omitempty"`
}
