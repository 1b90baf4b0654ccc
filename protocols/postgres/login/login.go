package login

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TLS modes of a Config, as in libpq's sslmode.
const (
	TLSDisable    = "disable"     // plain TCP (the default)
	TLSRequire    = "require"     // TLS, the server's certificate not verified
	TLSVerifyFull = "verify-full" // TLS, the certificate verified against RootCAs and ServerName
)

// DefaultDialTimeout bounds a login when Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Credential is how the agent proves one database role to Postgres.
type Credential struct {
	// Password returns the role's password when asked (read at each login,
	// so a rotated secret file is picked up); nil: no password (trust/peer).
	Password func(ctx context.Context) (string, error)
	// Certificate is the client certificate for cert authentication (and
	// for TLS to the server); nil: none. It is sent only over TLS.
	Certificate *tls.Certificate
}

// Config says how to reach one Postgres server.
type Config struct {
	Address    string         // host:port
	TLS        string         // TLSDisable (default), TLSRequire or TLSVerifyFull
	RootCAs    *x509.CertPool // verify-full
	ServerName string         // verify-full; default the address's host
	// Roles holds the credential of each role; a role without an entry
	// logs in with no secret.
	Roles map[string]Credential
	// DialTimeout bounds dialing and logging in (DefaultDialTimeout).
	DialTimeout time.Duration
}

// Validate checks the address and the TLS settings.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("checking postgres address %q: %w", c.Address, err)
	}
	switch c.TLS {
	case "", TLSDisable, TLSRequire:
	case TLSVerifyFull:
		if c.RootCAs == nil {
			return errors.New("checking postgres TLS: verify-full needs the CA certificates to verify the server with")
		}
	default:
		return fmt.Errorf("checking postgres TLS: unknown mode %q (want disable, require or verify-full)", c.TLS)
	}
	return nil
}

func (c Config) dialTimeout() time.Duration {
	if c.DialTimeout <= 0 {
		return DefaultDialTimeout
	}
	return c.DialTimeout
}

// Conn is a logged-in server connection, idle, ready for the client's first
// query.
type Conn struct {
	net.Conn          // the server connection (TLS or not), nothing buffered left unread
	Startup  *Startup // server params, real PID/secret key, tx status
}

// Open logs in to the server as user on database, with the startup
// parameters params and the secret that cfg.Roles holds for user, and hands
// over the raw connection.
//
// A login the server refuses, or a missing secret, is an error from which
// errors.As extracts a *LoginError (FATAL 28000 for a missing secret, whose
// message names the role and never the secret). Not reaching the server is
// any other error.
func Open(ctx context.Context, cfg Config, user, database string, params map[string]string) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cred := cfg.Roles[user]
	var password string
	if cred.Password != nil {
		p, err := cred.Password(ctx)
		if err == nil && p == "" {
			err = errors.New("it is empty")
		}
		if err != nil {
			return nil, fmt.Errorf("reading password of role %q: %v: %w", user, err, &LoginError{Response: &pgproto3.ErrorResponse{
				Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28000",
				Message: fmt.Sprintf("the agent has no password for role %q", user),
			}})
		}
		password = p
	}
	pc, err := pgconnConfig(cfg, cred, user, database, password, params)
	if err != nil {
		return nil, err
	}
	pg, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return nil, &LoginError{Response: errorResponse(pgErr)}
		}
		return nil, fmt.Errorf("connecting to postgres at %s: %w", cfg.Address, err)
	}
	// See the package doc: nothing may stay read ahead inside pgconn.
	if err := pg.SyncConn(ctx); err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		pg.Close(closeCtx)
		cancel()
		return nil, fmt.Errorf("synchronizing postgres connection: %w", err)
	}
	hc, err := pg.Hijack()
	if err != nil { // only when pgconn is busy, which it cannot be here
		pg.Close(context.Background())
		return nil, fmt.Errorf("hijacking postgres connection: %w", err)
	}
	if n := hc.Frontend.ReadBufferLen(); n != 0 {
		hc.Conn.Close()
		return nil, fmt.Errorf("hijacking postgres connection: %d bytes left in pgconn's buffer", n)
	}
	if err := hc.Conn.SetDeadline(time.Time{}); err != nil {
		hc.Conn.Close()
		return nil, fmt.Errorf("clearing postgres connection deadline: %w", err)
	}
	return &Conn{Conn: hc.Conn, Startup: &Startup{
		Params:    maps.Clone(hc.ParameterStatuses),
		PID:       hc.PID,
		SecretKey: bytes.Clone(hc.SecretKey),
		TxStatus:  hc.TxStatus,
	}}, nil
}

// pgconnConfig builds pgconn's Config. pgconn insists that ParseConfig make
// it; the connection string pins everything the environment or the home
// directory could otherwise set, and the fields are then set one by one.
func pgconnConfig(cfg Config, cred Credential, user, database, password string, params map[string]string) (*pgconn.Config, error) {
	host, portStr, _ := net.SplitHostPort(cfg.Address)
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("checking postgres address %q: bad port", cfg.Address)
	}
	pc, err := pgconn.ParseConfig("host=" + quote(host) + " port=" + portStr +
		" sslmode=disable sslrootcert='' sslcert='' sslkey='' sslcertmode=allow sslnegotiation=postgres" +
		" passfile='' target_session_attrs=any min_protocol_version=3.0 max_protocol_version=3.0" +
		" channel_binding=prefer require_auth=''")
	if err != nil {
		return nil, fmt.Errorf("preparing postgres connection config: %w", err)
	}
	tc, err := tlsConfig(cfg, cred, host)
	if err != nil {
		return nil, err
	}
	pc.Host, pc.Port, pc.TLSConfig, pc.Fallbacks = host, uint16(port), tc, nil
	pc.User, pc.Database, pc.Password = user, database, password
	pc.RuntimeParams = map[string]string{}
	for k, v := range params {
		if k != "user" && k != "database" {
			pc.RuntimeParams[k] = v
		}
	}
	pc.ConnectTimeout = cfg.dialTimeout()
	pc.DialFunc = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	pc.ValidateConnect, pc.AfterConnect = nil, nil
	pc.KerberosSrvName, pc.KerberosSpn = "", ""
	pc.OnNotice, pc.OnNotification = nil, nil
	return pc, nil
}

func tlsConfig(cfg Config, cred Credential, host string) (*tls.Config, error) {
	var tc *tls.Config
	switch cfg.TLS {
	case "", TLSDisable:
		return nil, nil
	case TLSRequire:
		// libpq's sslmode=require: encrypted, the server not verified.
		tc = &tls.Config{InsecureSkipVerify: true} // #nosec G402 -- the mode asks for no verification
	case TLSVerifyFull:
		name := cfg.ServerName
		if name == "" {
			name = host
		}
		tc = &tls.Config{RootCAs: cfg.RootCAs, ServerName: name}
	default:
		return nil, fmt.Errorf("checking postgres TLS: unknown mode %q", cfg.TLS)
	}
	tc.MinVersion = tls.VersionTLS12
	if cred.Certificate != nil {
		tc.Certificates = []tls.Certificate{*cred.Certificate}
	}
	return tc, nil
}

// quote quotes a libpq keyword/value value.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// errorResponse turns the server's refusal back into its ErrorResponse.
func errorResponse(e *pgconn.PgError) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.SeverityUnlocalized,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		Position:            e.Position,
		InternalPosition:    e.InternalPosition,
		InternalQuery:       e.InternalQuery,
		Where:               e.Where,
		SchemaName:          e.SchemaName,
		TableName:           e.TableName,
		ColumnName:          e.ColumnName,
		DataTypeName:        e.DataTypeName,
		ConstraintName:      e.ConstraintName,
		File:                e.File,
		Line:                e.Line,
		Routine:             e.Routine,
	}
}

// Cancel asks the server to cancel the query that the backend pid, with
// the secret key, is running. It dials plain TCP, which Postgres accepts
// for a CancelRequest whatever its TLS settings, and waits until the server
// closes the connection, which it does once it has handled the request.
func Cancel(ctx context.Context, cfg Config, pid uint32, key []byte) error {
	msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
	if err != nil {
		return fmt.Errorf("encoding cancel request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout())
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return fmt.Errorf("dialing postgres at %s to cancel: %w", cfg.Address, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("sending cancel request: %w", err)
	}
	// The server answers nothing; its close says the request was read.
	io.Copy(io.Discard, io.LimitReader(c, 1<<10))
	return nil
}
