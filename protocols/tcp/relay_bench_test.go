package tcp_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/postern/postern/protocols/tcp"
)

// BenchmarkRelay measures one direction of a relay between two loopback TCP
// pairs: writer → [client conn → Relay → upstream conn] → reader, with 1 MiB
// writes. The timed part ends when the reader has seen the relay's
// half-close, so it covers the last byte's arrival. Each run uses fresh
// connections, made before the timer starts.
func BenchmarkRelay(b *testing.B) {
	writer, client := benchTCPPair(b)
	upstream, reader := benchTCPPair(b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relayed := make(chan error, 1)
	go func() {
		_, err := (&tcp.Relay{Session: "bench"}).Run(ctx, client, upstream)
		relayed <- err
	}()
	received := make(chan int64, 1)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{reader}, make([]byte, 256<<10))
		received <- n
	}()

	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for range b.N {
		n, err := writer.Write(buf)
		sent += int64(n)
		if err != nil {
			b.Fatalf("writing: %v", err)
		}
	}
	if err := writer.(*net.TCPConn).CloseWrite(); err != nil {
		b.Fatalf("half-closing: %v", err)
	}
	got := <-received
	b.StopTimer()
	if got != sent {
		b.Fatalf("reader got %d bytes, want %d", got, sent)
	}
	// The service side ends too; the relay then returns.
	reader.Close()
	if err := <-relayed; err != nil {
		b.Fatalf("relaying: %v", err)
	}
}

// benchTCPPair returns both ends of one loopback TCP connection; both are
// closed when b ends.
func benchTCPPair(b *testing.B) (dialed, accepted net.Conn) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	accepted = <-acc
	if accepted == nil {
		dialed.Close()
		b.Fatal("accepting: listener failed")
	}
	b.Cleanup(func() {
		dialed.Close()
		accepted.Close()
	})
	return dialed, accepted
}
