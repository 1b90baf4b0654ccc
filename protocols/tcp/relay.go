package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocols"
)

// bufSize is the copy buffer per direction. Larger buffers mean fewer
// syscalls and fewer tunnel frames on bulk transfers.
const bufSize = 128 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Counts holds the bytes a relay moved each way.
type Counts struct {
	In  int64 // client → service
	Out int64 // service → client
}

// Relay is one relayed session. The zero value is not usable; fill in the
// fields and call Run.
type Relay struct {
	// Session is the audit session id used on tcp.data events.
	Session string
	// Recorder, when set, receives tcp.data events: at most one per
	// direction per Interval, and a last one when the direction ends.
	Recorder protocols.Recorder
	// Interval between tcp.data events of one direction; 1s when zero.
	Interval time.Duration

	in, out atomic.Int64
}

// Counts returns the bytes moved so far.
func (r *Relay) Counts() Counts { return Counts{In: r.in.Load(), Out: r.out.Load()} }

// Run copies client→upstream and upstream→client until both directions have
// ended or ctx is done. When one side finishes sending (EOF), the other side
// is half-closed, so protocols that rely on a half-close keep working. When
// either direction fails, both connections are closed. Run closes both
// connections before it returns.
func (r *Relay) Run(ctx context.Context, client, upstream net.Conn) (Counts, error) {
	errc := make(chan error, 2)
	go func() { errc <- r.pipe(upstream, client, protocols.ClientToService, &r.in) }()
	go func() { errc <- r.pipe(client, upstream, protocols.ServiceToClient, &r.out) }()

	stop := context.AfterFunc(ctx, func() {
		client.Close()
		upstream.Close()
	})
	defer stop()

	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			// A failed direction ends the session: unblock the other one.
			client.Close()
			upstream.Close()
		}
	}
	client.Close()
	upstream.Close()
	if ctx.Err() != nil && first != nil {
		first = ctx.Err()
	}
	return r.Counts(), first
}

// pipe copies src to dst, then half-closes dst.
func (r *Relay) pipe(dst, src net.Conn, dir string, total *atomic.Int64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp

	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var pending int64
	last := time.Now()
	flush := func(now time.Time) {
		if r.Recorder != nil && pending > 0 {
			r.Recorder.Record(protocols.Event{Session: r.Session, Time: now, Type: protocols.TCPData,
				Data: &protocols.TCPDataEvent{Direction: dir, Bytes: pending}})
		}
		pending = 0
		last = now
	}
	defer func() { flush(time.Now()) }()

	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			total.Add(int64(n))
			pending += int64(n)
			if r.Recorder != nil {
				if now := time.Now(); now.Sub(last) >= interval {
					flush(now)
				}
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return closeWrite(dst)
			}
			if isClosed(rerr) {
				return nil
			}
			return rerr
		}
	}
}

// closeWrite half-closes c when it can, and closes it when it cannot.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !isClosed(err) {
			return err
		}
		return nil
	}
	return c.Close()
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
