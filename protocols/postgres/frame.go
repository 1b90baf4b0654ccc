package postgres

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrMessageTooLarge is returned for a message longer than the limit of the
// side it came from.
var ErrMessageTooLarge = errors.New("message too large")

// header is the type and body length of one protocol message.
type header struct {
	typ byte
	n   int // body length, without the 4 length bytes
}

// readHeader reads the five bytes that open every message after startup and
// checks the body length against max.
func readHeader(r *bufio.Reader, max int) (header, error) {
	b, err := r.Peek(5)
	if err != nil {
		if len(b) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return header{}, err
	}
	h := header{typ: b[0], n: int(binary.BigEndian.Uint32(b[1:5])) - 4}
	if h.n < 0 {
		return header{}, fmt.Errorf("reading message %q: length %d is less than 4", h.typ, h.n+4)
	}
	if h.n > max {
		return header{}, fmt.Errorf("reading message %q of %d bytes (limit %d): %w", h.typ, h.n, max, ErrMessageTooLarge)
	}
	r.Discard(5)
	return h, nil
}

// readBody reads a body of h.n bytes into buf (grown as needed) and returns it.
func readBody(r *bufio.Reader, h header, buf []byte) ([]byte, error) {
	if cap(buf) < h.n {
		buf = make([]byte, h.n)
	}
	buf = buf[:h.n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return buf, fmt.Errorf("reading message %q: %w", h.typ, err)
	}
	return buf, nil
}

// writeHeader writes a message header.
func writeHeader(w *bufio.Writer, h header) error {
	var b [5]byte
	b[0] = h.typ
	binary.BigEndian.PutUint32(b[1:], uint32(h.n+4))
	_, err := w.Write(b[:])
	return err
}

// writeMessage writes a whole message: header and body.
func writeMessage(w *bufio.Writer, typ byte, body []byte) error {
	if err := writeHeader(w, header{typ: typ, n: len(body)}); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// copyBody streams a body of n bytes from r to w without holding more than
// r's buffer of it.
func copyBody(w *bufio.Writer, r *bufio.Reader, n int) error {
	for n > 0 {
		k := r.Buffered()
		if k == 0 {
			if _, err := r.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			k = r.Buffered()
		}
		k = min(k, n)
		p, _ := r.Peek(k)
		if _, err := w.Write(p); err != nil {
			return err
		}
		r.Discard(k)
		n -= k
	}
	return nil
}

// Request codes of the untyped messages a client may open with.
const (
	codeProtocol3   = 196608 // 3.0; minor versions add to it
	codeCancel      = 80877102
	codeSSLRequest  = 80877103
	codeGSSENC      = 80877104
	maxStartupLen   = 10000 // MAX_STARTUP_PACKET_LENGTH of the Postgres source
	minStartupLen   = 8
	protocolMajor3  = 3
	protocolMinor32 = 2
)

// ErrNotStartup is returned by ReadStartup for a valid request that is
// neither a StartupMessage nor a CancelRequest (SSLRequest, GSSENCRequest).
var ErrNotStartup = errors.New("not a startup message")

// Startup is the first message of a client connection inside TLS: a
// StartupMessage (Params set) or a CancelRequest (Cancel set).
type Startup struct {
	// Minor is the protocol minor version the client asked for.
	Minor  uint16
	Params map[string]string
	Cancel *CancelKey
}

// CancelKey is a backend key: the pid and secret of a CancelRequest or a
// BackendKeyData.
type CancelKey struct {
	PID    uint32
	Secret []byte
}

// ReadStartup reads the untyped first message of a connection. A
// StartupMessage must be of protocol 3, with a user; a CancelRequest must
// carry a secret of 4 to 256 bytes.
func ReadStartup(r io.Reader) (*Startup, error) {
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, fmt.Errorf("reading startup message: %w", err)
	}
	n := int(binary.BigEndian.Uint32(lb[:]))
	if n < minStartupLen || n > maxStartupLen {
		return nil, fmt.Errorf("reading startup message: length %d out of range", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading startup message: %w", err)
	}
	return parseStartup(body)
}

func parseStartup(body []byte) (*Startup, error) {
	code := binary.BigEndian.Uint32(body[:4])
	switch {
	case code == codeCancel:
		if len(body) < 12 || len(body) > 264 {
			return nil, fmt.Errorf("reading cancel request: length %d out of range", len(body)+4)
		}
		return &Startup{Cancel: &CancelKey{PID: binary.BigEndian.Uint32(body[4:8]), Secret: append([]byte(nil), body[8:]...)}}, nil
	case code == codeSSLRequest || code == codeGSSENC:
		return nil, fmt.Errorf("reading startup message: encryption request %d inside TLS: %w", code, ErrNotStartup)
	case code>>16 != protocolMajor3:
		return nil, fmt.Errorf("reading startup message: unsupported protocol %d.%d", code>>16, code&0xffff)
	}
	s := &Startup{Minor: uint16(code & 0xffff), Params: map[string]string{}}
	rest := body[4:]
	for {
		k, r, ok := cutZero(rest)
		if !ok {
			return nil, errors.New("reading startup message: parameters not terminated")
		}
		if k == "" {
			if len(r) != 0 {
				return nil, errors.New("reading startup message: bytes after the parameters")
			}
			break
		}
		v, r2, ok := cutZero(r)
		if !ok {
			return nil, fmt.Errorf("reading startup message: parameter %q has no value", k)
		}
		if _, dup := s.Params[k]; dup {
			return nil, fmt.Errorf("reading startup message: parameter %q given twice", k)
		}
		s.Params[k] = v
		rest = r2
	}
	if s.Params["user"] == "" {
		return nil, errors.New("reading startup message: no user name given")
	}
	return s, nil
}

func cutZero(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}
