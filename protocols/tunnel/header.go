package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// HeaderVersion is the version of the stream header this package writes.
const HeaderVersion = 1

// MaxHeaderBody is the largest JSON body a header may carry.
const MaxHeaderBody = 64 << 10

// headerMagic opens every stream header.
const headerMagic = "PT"

// headerPrefixLen is magic, version, kind and length.
const headerPrefixLen = 8

// ErrUnsupportedVersion is returned by ReadHeader for a header of a version
// this package does not speak. The reader may answer with a Reply error.
var ErrUnsupportedVersion = errors.New("unsupported stream header version")

// Kind says what a stream is for.
type Kind uint8

// Stream kinds.
const (
	KindControl Kind = 1 // the control stream: Messages (see Control)
	KindData    Kind = 2 // bytes of one client session with one service
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindControl:
		return "control"
	case KindData:
		return "data"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header is written by the opener first thing on every stream.
type Header struct {
	Kind     Kind
	Service  string            // data streams: the service's name
	Session  string            // audit session id
	Identity string            // the caller's SPIFFE ID
	Groups   []string          // the caller's groups
	Source   string            // the client's address
	Params   map[string]string // protocol extras
}

// headerBody is the JSON part of a header on the wire.
type headerBody struct {
	Service  string            `json:"service,omitempty"`
	Session  string            `json:"session,omitempty"`
	Identity string            `json:"identity,omitempty"`
	Groups   []string          `json:"groups,omitempty"`
	Source   string            `json:"source,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

func (h Header) validate() error {
	switch h.Kind {
	case KindControl:
	case KindData:
		if h.Service == "" {
			return errors.New("data stream header without a service")
		}
	default:
		return fmt.Errorf("unknown stream kind %d", uint8(h.Kind))
	}
	return nil
}

// AppendHeader appends the wire encoding of h to b.
func AppendHeader(b []byte, h Header) ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("encoding stream header: %w", err)
	}
	body, err := json.Marshal(headerBody{
		Service:  h.Service,
		Session:  h.Session,
		Identity: h.Identity,
		Groups:   h.Groups,
		Source:   h.Source,
		Params:   h.Params,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding stream header: %w", err)
	}
	if len(body) > MaxHeaderBody {
		return nil, fmt.Errorf("encoding stream header: body of %d bytes exceeds %d", len(body), MaxHeaderBody)
	}
	b = append(b, headerMagic...)
	b = append(b, HeaderVersion, byte(h.Kind))
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// WriteHeader writes h to w in one Write.
func WriteHeader(w io.Writer, h Header) error {
	b, err := AppendHeader(nil, h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing stream header: %w", err)
	}
	return nil
}

// ReadHeader reads one header from r. It reads exactly the header's bytes and
// never more, so the stream's data can follow on the same reader. A header of
// another version gives an error wrapping ErrUnsupportedVersion, after which
// the rest of the stream is not understood.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [headerPrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("reading stream header: %w", err)
	}
	if string(pre[:2]) != headerMagic {
		return Header{}, fmt.Errorf("reading stream header: bad magic %q", pre[:2])
	}
	if pre[2] != HeaderVersion {
		return Header{}, fmt.Errorf("reading stream header: %w %d", ErrUnsupportedVersion, pre[2])
	}
	h := Header{Kind: Kind(pre[3])}
	if h.Kind != KindControl && h.Kind != KindData {
		return Header{}, fmt.Errorf("reading stream header: unknown stream kind %d", pre[3])
	}
	n := binary.BigEndian.Uint32(pre[4:])
	if n > MaxHeaderBody {
		return Header{}, fmt.Errorf("reading stream header: body of %d bytes exceeds %d", n, MaxHeaderBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("reading stream header body: %w", noEOF(err))
	}
	var hb headerBody
	if err := json.Unmarshal(body, &hb); err != nil {
		return Header{}, fmt.Errorf("decoding stream header: %w", err)
	}
	h.Service, h.Session, h.Identity = hb.Service, hb.Session, hb.Identity
	h.Groups, h.Source, h.Params = hb.Groups, hb.Source, hb.Params
	if err := h.validate(); err != nil {
		return Header{}, fmt.Errorf("decoding stream header: %w", err)
	}
	return h, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: after the first bytes of a
// message, the end of the stream is always unexpected.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
