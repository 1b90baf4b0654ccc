// Package deps pins the modules Postern builds on while the packages that use them are written.
package deps

import (
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/hashicorp/yamux"
	_ "github.com/jackc/pgx/v5/pgproto3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/quic-go/quic-go"
	_ "github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	_ "github.com/spiffe/go-spiffe/v2/spiffeid"
	_ "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	_ "github.com/spiffe/go-spiffe/v2/svid/x509svid"
	_ "go.step.sm/crypto/pemutil"
	_ "go.step.sm/crypto/x509util"
	_ "gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)
