package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// MaxControlMessage is the largest encoded Message on the control stream.
const MaxControlMessage = 1 << 20

// Message types.
const (
	TypeAnnounce  = "announce"  // agent → gateway: Agent and Services
	TypeAnnounced = "announced" // gateway → agent: the services are now routed
	TypePing      = "ping"      // either way: Seq
	TypePong      = "pong"      // the answer to a ping: the same Seq
	// TypeDrain (agent → gateway): the agent is leaving; no new stream
	// should come to it, and those open go on until they end.
	TypeDrain = "drain"
	// TypeDraining (gateway → agent): no new stream will come; the gateway
	// closes its idle streams to the agent and those that finish.
	TypeDraining = "draining"
)

// Service is one service an agent announces.
type Service struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	// CaptureRows is how many result rows of each Postgres query the
	// gateway keeps in the recording (0: none).
	CaptureRows int `json:"capture_rows,omitempty"`
}

// Message is one message on the control stream.
type Message struct {
	Type     string    `json:"type"`
	Agent    string    `json:"agent,omitempty"`
	Services []Service `json:"services,omitempty"`
	Seq      uint64    `json:"seq,omitempty"`
}

// Control reads and writes Messages on a control stream, after its Header.
// Send is safe for concurrent use; one goroutine calls Receive.
type Control struct {
	r  io.Reader
	w  io.Writer
	c  io.Closer
	mu sync.Mutex // serializes Send
}

// NewControl returns a Control on c, whose Header has already been written or
// read.
func NewControl(c net.Conn) *Control {
	return &Control{r: c, w: c, c: c}
}

// Send writes m as one length-prefixed JSON message.
func (c *Control) Send(m Message) error {
	b, err := AppendMessage(nil, m)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("sending control message: %w", err)
	}
	return nil
}

// Receive reads the next message. It returns io.EOF when the peer closed the
// stream between messages.
func (c *Control) Receive() (Message, error) {
	return readMessage(c.r)
}

// Close closes the underlying stream.
func (c *Control) Close() error {
	return c.c.Close()
}

// AppendMessage appends the wire encoding of m to b.
func AppendMessage(b []byte, m Message) ([]byte, error) {
	if m.Type == "" {
		return nil, errors.New("encoding control message: empty type")
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding control message: %w", err)
	}
	if len(body) > MaxControlMessage {
		return nil, fmt.Errorf("encoding control message: %d bytes exceeds %d", len(body), MaxControlMessage)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

func readMessage(r io.Reader) (Message, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Message{}, io.EOF
		}
		return Message{}, fmt.Errorf("receiving control message: %w", err)
	}
	n := binary.BigEndian.Uint32(pre[:])
	if n > MaxControlMessage {
		return Message{}, fmt.Errorf("receiving control message: %d bytes exceeds %d", n, MaxControlMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Message{}, fmt.Errorf("receiving control message: %w", noEOF(err))
	}
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, fmt.Errorf("decoding control message: %w", err)
	}
	if m.Type == "" {
		return Message{}, errors.New("decoding control message: empty type")
	}
	return m, nil
}
