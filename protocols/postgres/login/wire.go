package login

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Keys of the tunnel stream header's Params that open a Postgres session at
// the agent. The gateway decides them; the agent trusts them.
const (
	ParamUser     = "pg.user"     // the database role to log in as
	ParamDatabase = "pg.database" // the database
	// ParamPrefix prefixes every other startup parameter the server gets
	// ("pg.param.application_name", "pg.param.default_transaction_read_only").
	ParamPrefix = "pg.param."
	// ParamCancel, instead of a session, asks the agent to send a
	// CancelRequest: the value is "PID:HEXKEY" of the real backend.
	ParamCancel = "pg.cancel"
)

// CancelValue encodes a backend key for ParamCancel.
func CancelValue(pid uint32, key []byte) string {
	return strconv.FormatUint(uint64(pid), 10) + ":" + hex.EncodeToString(key)
}

// ParseCancelValue decodes a ParamCancel value.
func ParseCancelValue(v string) (uint32, []byte, error) {
	p, k, ok := strings.Cut(v, ":")
	if !ok {
		return 0, nil, errors.New("parsing cancel key: want PID:HEXKEY")
	}
	pid, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		return 0, nil, fmt.Errorf("parsing cancel pid: %w", err)
	}
	key, err := hex.DecodeString(k)
	if err != nil || len(key) == 0 || len(key) > 256 {
		return 0, nil, errors.New("parsing cancel key: want 1 to 256 hex bytes")
	}
	return uint32(pid), key, nil
}

// Startup is what the agent's login told the server side of a session: the
// server's parameters, its backend key and its transaction status.
type Startup struct {
	Params    map[string]string
	PID       uint32
	SecretKey []byte
	TxStatus  byte
}

// WriteStartup sends the result of a successful login on the stream, after
// the tunnel Reply: a ParameterStatus per parameter, BackendKeyData and
// ReadyForQuery, as the server sent them to the agent.
func WriteStartup(w io.Writer, s *Startup) error {
	var buf []byte
	var err error
	for k, v := range s.Params {
		if buf, err = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(buf); err != nil {
			return fmt.Errorf("encoding parameter status: %w", err)
		}
	}
	if buf, err = (&pgproto3.BackendKeyData{ProcessID: s.PID, SecretKey: s.SecretKey}).Encode(buf); err != nil {
		return fmt.Errorf("encoding backend key: %w", err)
	}
	tx := s.TxStatus
	if tx == 0 {
		tx = 'I'
	}
	if buf, err = (&pgproto3.ReadyForQuery{TxStatus: tx}).Encode(buf); err != nil {
		return fmt.Errorf("encoding ready for query: %w", err)
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("writing startup: %w", err)
	}
	return nil
}

// WriteError sends a failed login on the stream: the server's own
// ErrorResponse when it refused, or one the agent made.
func WriteError(w io.Writer, e *pgproto3.ErrorResponse) error {
	buf, err := e.Encode(nil)
	if err != nil {
		return fmt.Errorf("encoding error response: %w", err)
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("writing error response: %w", err)
	}
	return nil
}

// LoginError is a login the server (or the agent) refused, as an
// ErrorResponse to show the client.
type LoginError struct{ Response *pgproto3.ErrorResponse }

func (e *LoginError) Error() string {
	return fmt.Sprintf("logging in: %s %s: %s", e.Response.Severity, e.Response.Code, e.Response.Message)
}

// maxStartupReply bounds one message of the agent's startup reply.
const maxStartupReply = 64 << 10

// ReadStartup reads what WriteStartup or WriteError sent. A refused login
// is a *LoginError.
func ReadStartup(r *bufio.Reader) (*Startup, error) {
	s := &Startup{Params: map[string]string{}}
	for {
		var head [5]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return nil, fmt.Errorf("reading startup reply: %w", err)
		}
		n := int(uint32(head[1])<<24|uint32(head[2])<<16|uint32(head[3])<<8|uint32(head[4])) - 4
		if n < 0 || n > maxStartupReply {
			return nil, fmt.Errorf("reading startup reply: message %q of %d bytes", head[0], n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, fmt.Errorf("reading startup reply: %w", err)
		}
		switch head[0] {
		case 'S':
			var m pgproto3.ParameterStatus
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("decoding parameter status: %w", err)
			}
			s.Params[m.Name] = m.Value
		case 'K':
			var m pgproto3.BackendKeyData
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("decoding backend key: %w", err)
			}
			s.PID, s.SecretKey = m.ProcessID, append([]byte(nil), m.SecretKey...)
		case 'Z':
			var m pgproto3.ReadyForQuery
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("decoding ready for query: %w", err)
			}
			s.TxStatus = m.TxStatus
			return s, nil
		case 'E':
			var m pgproto3.ErrorResponse
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("decoding error response: %w", err)
			}
			return nil, &LoginError{Response: &m}
		default:
			return nil, fmt.Errorf("reading startup reply: unexpected message %q", head[0])
		}
	}
}
