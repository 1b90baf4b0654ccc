package tcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-acc
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type events struct {
	mu  sync.Mutex
	got []protocols.Event
}

func (e *events) Record(ev protocols.Event) {
	e.mu.Lock()
	e.got = append(e.got, ev)
	e.mu.Unlock()
}

func (e *events) bytes(dir string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, ev := range e.got {
		if d := ev.Data.(*protocols.TCPDataEvent); d.Direction == dir {
			n += d.Bytes
		}
	}
	return n
}

// TestRelayHalfClose: the client sends, half-closes, and still reads the
// whole answer the service sends after seeing EOF; counts and tcp.data
// events add up.
func TestRelayHalfClose(t *testing.T) {
	client, gwClient := pair(t)
	gwUp, service := pair(t)
	rec := &events{}
	r := &Relay{Session: "s1", Recorder: rec, Interval: time.Millisecond}
	done := make(chan Counts, 1)
	go func() {
		c, err := r.Run(context.Background(), gwClient, gwUp)
		if err != nil {
			t.Errorf("relay: %v", err)
		}
		done <- c
	}()
	go func() {
		n, _ := io.Copy(io.Discard, service)
		service.Write(bytes.Repeat([]byte("y"), int(n)*2))
		service.Close()
	}()
	request := bytes.Repeat([]byte("x"), 300000)
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	answer, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if len(answer) != 600000 {
		t.Fatalf("got %d answer bytes, want 600000", len(answer))
	}
	c := <-done
	if c.In != 300000 || c.Out != 600000 {
		t.Fatalf("got counts %+v, want in 300000 out 600000", c)
	}
	if in, out := rec.bytes(protocols.ClientToService), rec.bytes(protocols.ServiceToClient); in != c.In || out != c.Out {
		t.Fatalf("got tcp.data totals in %d out %d, want %d and %d", in, out, c.In, c.Out)
	}
}

// TestRelayCancel: cancelling the context ends a relay whose peers are idle
// and closes both connections.
func TestRelayCancel(t *testing.T) {
	client, gwClient := pair(t)
	gwUp, service := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := (&Relay{}).Run(ctx, gwClient, gwUp)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled && err != nil {
			t.Fatalf("got %v, want context.Canceled or nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end after cancel")
	}
	for name, c := range map[string]net.Conn{"client": client, "service": service} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("%s: got a byte, want the connection closed", name)
		}
	}
}

// TestRelayPeerReset: when the service side resets, the client side is
// closed too and Run returns.
func TestRelayPeerReset(t *testing.T) {
	client, gwClient := pair(t)
	gwUp, service := pair(t)
	done := make(chan struct{})
	go func() {
		(&Relay{}).Run(context.Background(), gwClient, gwUp)
		close(done)
	}()
	service.(*net.TCPConn).SetLinger(0)
	service.Close() // RST
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := io.ReadAll(client); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("client was not closed after the service reset")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end after the service reset")
	}
}
