package bearer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrUnauthenticated is wrapped by every refusal of a token. The wrapping
// error says why, in words safe to log.
var ErrUnauthenticated = errors.New("unauthenticated")

// Methods of authentication, the values of Identity.Method.
const (
	MethodOIDC   = "oidc"
	MethodAPIKey = "apikey"
)

// Identity is who a bearer token proved the caller to be.
type Identity struct {
	ID     spiffeid.ID
	Groups []string
	Method string // MethodOIDC or MethodAPIKey
	Issuer string // the OIDC issuer; "" for an API key
	KeyID  string // the API key id, or the JWT's jti ("" if it has none)
}

// refusef returns an error wrapping ErrUnauthenticated.
func refusef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, args...))
}

// maxQuoted is how much of a caller-supplied string a refusal repeats.
const maxQuoted = 64

// quote returns s, cut to maxQuoted bytes, as a Go-quoted string: a value
// that came from the caller goes into a log line only through quote.
func quote(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q…", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}

// oneLine flattens a library error (errors.Join puts newlines in them).
func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", "; ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
