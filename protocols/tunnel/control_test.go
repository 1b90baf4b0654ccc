package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func sampleMessages() map[string]Message {
	return map[string]Message{
		"announce": {Type: TypeAnnounce, Agent: "db1", Services: []Service{{Name: "orders", Protocol: "postgres"}, {Name: "web", Protocol: "http"}}},
		"ping":     {Type: TypePing, Seq: 42},
		"pong":     {Type: TypePong, Seq: 42},
		"unknown":  {Type: "future-type"},
	}
}

func encodeMessage(t testing.TB, m Message) []byte {
	t.Helper()
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("encoding message: %v", err)
	}
	return b
}

func TestControlRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sender, receiver := NewControl(a), NewControl(b)

	msgs := sampleMessages()
	var wg sync.WaitGroup
	for _, m := range msgs {
		wg.Go(func() {
			if err := sender.Send(m); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	got := make(map[string]Message)
	for range len(msgs) {
		m, err := receiver.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		got[m.Type] = m
	}
	wg.Wait()
	for _, want := range msgs {
		if g := got[want.Type]; !reflect.DeepEqual(g, want) {
			t.Errorf("got %+v, want %+v", g, want)
		}
	}

	if err := sender.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := receiver.Receive(); !errors.Is(err, io.EOF) {
		t.Errorf("got %v after the peer closed, want io.EOF", err)
	}
}

func TestControlWireFormat(t *testing.T) {
	got := encodeMessage(t, Message{Type: TypePing, Seq: 1})
	body := `{"type":"ping","seq":1}`
	want := append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	if !bytes.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAppendMessageErrors(t *testing.T) {
	tests := map[string]Message{
		"empty type": {},
		"too large":  {Type: TypeAnnounce, Agent: strings.Repeat("a", MaxControlMessage)},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := AppendMessage(nil, m); err == nil {
				t.Fatal("got no error, want one")
			}
		})
	}
}

func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestControlReceiveErrors(t *testing.T) {
	tests := map[string][]byte{
		"zero length":  frame(""),
		"too long":     binary.BigEndian.AppendUint32(nil, MaxControlMessage+1),
		"not JSON":     frame("hello"),
		"empty type":   frame(`{"seq":1}`),
		"wrong type":   frame(`{"type":1}`),
		"JSON null":    frame("null"),
		"short body":   frame(`{"type":"ping"}`)[:8],
		"short length": {0, 0},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			c := &Control{r: bytes.NewReader(in)}
			m, err := c.Receive()
			if err == nil {
				t.Fatalf("got %+v, want an error", m)
			}
			if errors.Is(err, io.EOF) {
				t.Errorf("got io.EOF, want another error: the stream ended inside a message")
			}
		})
	}
}

func TestControlReceiveTruncated(t *testing.T) {
	for name, m := range sampleMessages() {
		t.Run(name, func(t *testing.T) {
			b := encodeMessage(t, m)
			for i := range len(b) {
				c := &Control{r: bytes.NewReader(b[:i])}
				if got, err := c.Receive(); err == nil {
					t.Fatalf("prefix of %d/%d bytes: got %+v, want an error", i, len(b), got)
				}
			}
		})
	}
}

func FuzzControlReceive(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(encodeMessage(f, m))
	}
	f.Add(append(encodeMessage(f, Message{Type: TypePing, Seq: 1}), encodeMessage(f, Message{Type: TypePong, Seq: 1})...))
	f.Add(frame("null"))
	f.Add(binary.BigEndian.AppendUint32(nil, 0xFFFFFFFF))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &Control{r: bytes.NewReader(in)}
		for {
			m, err := c.Receive()
			if err != nil {
				return
			}
			if m.Type == "" {
				t.Fatalf("got a message without a type: %+v", m)
			}
			b, err := AppendMessage(nil, m)
			if err != nil {
				if len(in) > MaxControlMessage/6 {
					return // JSON escaping can grow a message up to sixfold
				}
				t.Fatalf("re-encoding %+v: %v", m, err)
			}
			m2, err := (&Control{r: bytes.NewReader(b)}).Receive()
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("got %+v, %v after a round trip, want %+v", m2, err, m)
			}
		}
	})
}
