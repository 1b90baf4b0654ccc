package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxReplyError is the longest error text a Reply carries; WriteReply
// shortens longer texts.
const MaxReplyError = 4096

// Reply status bytes.
const (
	replyOK    = 0
	replyError = 1
)

// Reply is the acceptor's answer to a stream header, sent once it has dialed
// the local service (OK) or failed to (Error says why), so that the opener
// can try another agent.
type Reply struct {
	OK    bool
	Error string
}

// WriteReply writes r to w in one Write.
func WriteReply(w io.Writer, r Reply) error {
	b := make([]byte, 3, 3+len(r.Error))
	if r.OK {
		b[0] = replyOK
	} else {
		b[0] = replyError
		msg := strings.ToValidUTF8(r.Error, "\uFFFD")
		if len(msg) > MaxReplyError {
			i := MaxReplyError
			for i > 0 && !utf8.RuneStart(msg[i]) {
				i--
			}
			msg = msg[:i]
		}
		binary.BigEndian.PutUint16(b[1:], uint16(len(msg)))
		b = append(b, msg...)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing stream reply: %w", err)
	}
	return nil
}

// ReadReply reads one Reply from r, exactly its bytes and never more.
func ReadReply(r io.Reader) (Reply, error) {
	var pre [3]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Reply{}, fmt.Errorf("reading stream reply: %w", err)
	}
	n := binary.BigEndian.Uint16(pre[1:])
	switch pre[0] {
	case replyOK:
		if n != 0 {
			return Reply{}, fmt.Errorf("reading stream reply: OK reply with %d bytes of error text", n)
		}
		return Reply{OK: true}, nil
	case replyError:
		if n > MaxReplyError {
			return Reply{}, fmt.Errorf("reading stream reply: error text of %d bytes exceeds %d", n, MaxReplyError)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return Reply{}, fmt.Errorf("reading stream reply: %w", noEOF(err))
		}
		return Reply{Error: strings.ToValidUTF8(string(msg), "\uFFFD")}, nil
	}
	return Reply{}, fmt.Errorf("reading stream reply: unknown status %d", pre[0])
}
