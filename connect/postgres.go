package connect

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/protocols/tcp"
)

// alpnPostgres is the ALPN protocol of Postgres over direct TLS (libpq's
// sslnegotiation=direct). The gateway offers it for Postgres services only.
const alpnPostgres = "postgresql"

// Request codes of the untyped messages a Postgres client may open with.
const (
	codeCancel     = 80877102
	codeSSLRequest = 80877103
	codeGSSENC     = 80877104
	// maxStartupLen bounds a startup message, its length word included: the
	// MAX_STARTUP_PACKET_LENGTH of the Postgres source, as the gateway has it.
	maxStartupLen = 10000
	minStartupLen = 8
)

// defaultStartupTimeout is the gateway's own limit on a client's startup.
const defaultStartupTimeout = 10 * time.Second

// errBadStartup marks a first message that no Postgres server would take;
// the client is told so with an ErrorResponse.
var errBadStartup = errors.New("invalid startup packet")

// forwardPostgres serves a local connection to a Postgres service. The
// local client speaks plain Postgres: an SSLRequest or a GSSENCRequest is
// declined ('N', as a server without TLS would), and the StartupMessage or
// CancelRequest that follows becomes the first message inside TLS, where the
// gateway expects it (as with libpq's sslnegotiation=direct). A session is
// then relayed byte for byte; a cancel ends once the gateway has taken it.
func (p *Proxy) forwardPostgres(ctx context.Context, local net.Conn, remote *tls.Conn) {
	defer remote.Close()
	timeout := p.StartupTimeout
	if timeout <= 0 {
		timeout = defaultStartupTimeout
	}
	deadline := time.Now().Add(timeout)
	local.SetDeadline(deadline)
	remote.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() {
		local.Close()
		remote.Close()
	})
	msg, frame, err := readFirstMessage(local)
	if err == nil {
		// The frame is read exactly, length word then body, straight from
		// the connection: whatever the client sent after it is still
		// unread there, and the relay below passes it on.
		if _, werr := remote.Write(frame); werr != nil {
			err = fmt.Errorf("sending startup message to the gateway: %w", werr)
		}
	}
	if !stop() {
		return // ctx is done and both connections are closed
	}
	if err != nil {
		level := slog.LevelDebug // the client went away or fell silent
		if errors.Is(err, errBadStartup) {
			refuse(local, "08P01", err.Error())
			level = slog.LevelWarn
		}
		p.Logger.Log(ctx, level, "postgres client startup", "service", p.Service, "remote", local.RemoteAddr().String(), "err", err)
		return
	}

	if c, ok := msg.(*pgproto3.CancelRequest); ok {
		// Nothing follows a cancel (close_notify says so). Wait for the
		// gateway to close the connection, as libpq waits for the server:
		// then the request has been taken, and the client, which waits on
		// us in turn, learns it when we close.
		stop := context.AfterFunc(ctx, func() { remote.Close() })
		defer stop()
		remote.CloseWrite()
		_, err := io.Copy(io.Discard, remote)
		p.Logger.Debug("postgres cancel request sent", "service", p.Service, "pid", c.ProcessID, "err", err)
		return
	}
	local.SetDeadline(time.Time{})
	remote.SetDeadline(time.Time{})
	counts, err := (&tcp.Relay{}).Run(ctx, local, remote)
	p.Logger.Debug("connection closed", "service", p.Service, "bytes_in", counts.In+int64(len(frame)), "bytes_out", counts.Out, "err", err)
}

// readFirstMessage reads a Postgres client's opening messages from rw. It
// declines an SSLRequest and a GSSENCRequest, each at most once, by writing
// 'N', and returns the StartupMessage or CancelRequest that follows, with
// its frame as the client sent it. A message no server would accept gives an
// error wrapping errBadStartup.
func readFirstMessage(rw io.ReadWriter) (pgproto3.FrontendMessage, []byte, error) {
	var sslDone, gssDone bool
	for {
		msg, frame, err := readStartup(rw)
		if err != nil {
			return nil, nil, err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest:
			if sslDone {
				return nil, nil, fmt.Errorf("%w: SSLRequest sent twice", errBadStartup)
			}
			sslDone = true
		case *pgproto3.GSSEncRequest:
			if gssDone {
				return nil, nil, fmt.Errorf("%w: GSSENCRequest sent twice", errBadStartup)
			}
			gssDone = true
		default:
			return msg, frame, nil
		}
		if _, err := rw.Write([]byte{'N'}); err != nil {
			return nil, nil, fmt.Errorf("declining encryption: %w", err)
		}
	}
}

// readStartup reads one untyped message — StartupMessage, CancelRequest,
// SSLRequest or GSSENCRequest — and decodes it with pgproto3's types. It
// reads the frame exactly, so nothing after it is consumed from r.
func readStartup(r io.Reader) (pgproto3.FrontendMessage, []byte, error) {
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, nil, fmt.Errorf("reading startup packet: %w", err)
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n < minStartupLen || n > maxStartupLen {
		return nil, nil, fmt.Errorf("%w: length %d out of range", errBadStartup, n)
	}
	frame := make([]byte, n)
	copy(frame, lb[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("reading startup packet: %w", err)
	}
	body := frame[4:]
	code := binary.BigEndian.Uint32(body)
	var msg interface {
		pgproto3.FrontendMessage
		Decode([]byte) error
	}
	switch {
	case code == codeSSLRequest || code == codeGSSENC:
		if n != minStartupLen {
			return nil, nil, fmt.Errorf("%w: encryption request of length %d", errBadStartup, n)
		}
		if code == codeSSLRequest {
			msg = &pgproto3.SSLRequest{}
		} else {
			msg = &pgproto3.GSSEncRequest{}
		}
	case code == codeCancel:
		msg = &pgproto3.CancelRequest{}
	case code>>16 == 3:
		sm := &pgproto3.StartupMessage{}
		// pgproto3 decodes protocol 3.0 and 3.2 only; Postgres (and the
		// gateway) take any 3.x and answer a newer minor with
		// NegotiateProtocolVersion, so check the parameters as 3.0's.
		checked := bytes.Clone(body)
		binary.BigEndian.PutUint32(checked, pgproto3.ProtocolVersion30)
		if err := sm.Decode(checked); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errBadStartup, err)
		}
		sm.ProtocolVersion = code
		return sm, frame, nil
	default:
		return nil, nil, fmt.Errorf("%w: unsupported frontend protocol %d.%d", errBadStartup, code>>16, code&0xffff)
	}
	if err := msg.Decode(body); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errBadStartup, err)
	}
	return msg, frame, nil
}

// refuse sends the client a FATAL ErrorResponse and ends our side of the
// connection so that the client gets to read it: closing with bytes of the
// client's still unread would reset the connection, and a reset may discard
// the message before the client has read it.
func refuse(c net.Conn, code, message string) {
	b, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code,
		Message: "postern connect: " + message}).Encode(nil)
	if err != nil {
		return
	}
	if _, err := c.Write(b); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.Copy(io.Discard, io.LimitReader(c, lingerLimit))
	}
}

// How long, and for how many bytes, refuse waits for the client to close.
const (
	lingerTimeout = time.Second
	lingerLimit   = 64 << 10
)
