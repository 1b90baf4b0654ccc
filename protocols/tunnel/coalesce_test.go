package tunnel_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/protocols/tunnel"
)

// Concurrent writers: every write arrives whole (never interleaved with
// another), each writer's in its order, nothing lost.
func TestCoalescingConnKeepsWritesWhole(t *testing.T) {
	const writers, perWriter = 16, 500
	c, s := loopbackPair(t)
	cc := tunnel.NewCoalescingConn(c)
	defer cc.Close()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				// A record: writer, sequence, length, then that many bytes
				// of the writer's number.
				n := 1 + (w*perWriter+i)%300
				rec := binary.BigEndian.AppendUint32(nil, uint32(w))
				rec = binary.BigEndian.AppendUint32(rec, uint32(i))
				rec = binary.BigEndian.AppendUint32(rec, uint32(n))
				rec = append(rec, bytes.Repeat([]byte{byte(w)}, n)...)
				if _, err := cc.Write(rec); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]uint32, writers)
	done := make(chan error, 1)
	go func() {
		hdr := make([]byte, 12)
		for range writers * perWriter {
			if _, err := io.ReadFull(s, hdr); err != nil {
				done <- err
				return
			}
			w, i, n := binary.BigEndian.Uint32(hdr), binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint32(hdr[8:])
			if w >= writers || i != next[w] || n == 0 || n > 300 {
				done <- errors.New("record out of order or torn")
				return
			}
			next[w]++
			body := make([]byte, n)
			if _, err := io.ReadFull(s, body); err != nil {
				done <- err
				return
			}
			if !bytes.Equal(body, bytes.Repeat([]byte{byte(w)}, int(n))) {
				done <- errors.New("record body mixed with another write")
				return
			}
		}
		done <- nil
	}()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for w, n := range next {
		if n != perWriter {
			t.Fatalf("writer %d: got %d records, want %d", w, n, perWriter)
		}
	}
}

// A writer that finds the queue full waits; Close releases it with an
// error, and nothing past the bound was accepted.
func TestCoalescingConnBoundsQueue(t *testing.T) {
	c, peer := net.Pipe() // nobody reads peer: the first send blocks
	defer peer.Close()
	cc := tunnel.NewCoalescingConn(c)
	chunk := make([]byte, 16<<10)
	var accepted int
	result := make(chan error, 1)
	go func() {
		for range 4 * tunnel.MaxCoalesced / len(chunk) {
			n, err := cc.Write(chunk)
			accepted += n
			if err != nil {
				result <- err
				return
			}
		}
		result <- nil
	}()
	// Let the writer fill the queue, then close under it.
	for {
		if cc.Queued() >= tunnel.MaxCoalesced {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cc.Close()
	err := <-result
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked write returned %v, want net.ErrClosed", err)
	}
	// The send under way and a full queue at most, each up to a write over.
	if max := 2 * (tunnel.MaxCoalesced + len(chunk)); accepted > max {
		t.Fatalf("accepted %d bytes with nobody reading, want at most %d", accepted, max)
	}
}

// When a send fails, every later Write says so.
func TestCoalescingConnReportsSendError(t *testing.T) {
	c, peer := net.Pipe()
	cc := tunnel.NewCoalescingConn(c)
	defer cc.Close()
	peer.Close()
	var err error
	for range 1000 {
		if _, err = cc.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write after the peer closed: got %v, want io.ErrClosedPipe", err)
	}
}

// What was written before Close reaches the peer before the conn closes.
func TestCoalescingConnSendsQueuedOnClose(t *testing.T) {
	c, s := loopbackPair(t)
	cc := tunnel.NewCoalescingConn(c)
	var want []byte
	for i := range 200 {
		p := bytes.Repeat([]byte{byte(i)}, 1000)
		want = append(want, p...)
		if _, err := cc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		got <- b
	}()
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes before the close, want the %d written", len(b), len(want))
	}
	if _, err := cc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: got %v, want net.ErrClosed", err)
	}
}

// BenchmarkCoalescingConn: many goroutines writing small messages (a
// query, a frame) to one loopback TCP connection, straight to it (each
// write a syscall; net.Conn serializes them) and through a CoalescingConn.
func BenchmarkCoalescingConn(b *testing.B) {
	for _, name := range []string{"direct", "coalesced"} {
		b.Run(name, func(b *testing.B) {
			raw, s := loopbackPair(b)
			go io.Copy(io.Discard, s)
			var c net.Conn = raw
			if name == "coalesced" {
				c = tunnel.NewCoalescingConn(raw)
			}
			defer c.Close()
			msg := make([]byte, 64)
			b.SetBytes(int64(len(msg)))
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Write(msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
