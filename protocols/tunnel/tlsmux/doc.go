// Package tlsmux carries Postern tunnel sessions over TLS 1.3 on TCP with
// yamux streams inside, for agents whose network blocks UDP. The gateway
// serves it on its one TCP port: it completes the TLS handshake itself, sees
// ALPN tunnel.ALPN and hands the connection to Server.
//
// Streams are yamux streams wrapped to satisfy net.Conn and
// tunnel.CloseWriter, and to behave like the QUIC transport's where yamux
// differs:
//
//   - CloseWrite sends FIN; reading goes on.
//   - Close sends FIN and makes further local reads and writes fail with
//     net.ErrClosed. yamux v0.1.2 has no stream reset, so the peer is not
//     told to stop writing: what it still sends is read and discarded until
//     it closes its side, the session ends, or a minute has passed.
//   - Writes are cut into frames of at most 64 KiB, so that one bulk
//     stream cannot hold the connection (and the keepalive pings) for long.
//   - A stream read after the session died returns io.EOF (yamux does not
//     tell a dead session from a FIN); watch Session.Done.
//   - MaxStreams counts accepted streams until they are closed; while the
//     limit is reached AcceptStream waits, and further streams wait in
//     yamux's backlog (256) or are refused by it.
//
// Writes: yamux's send loop hands each frame (header and body in one piece)
// to a tunnel.CoalescingConn and goes on; one goroutine sends, and the
// frames of all streams handed over during a send leave together, one TLS
// write and, through BatchConn, one socket write.
//
// Dead-peer detection: a yamux ping goes out every KeepAlive; when one is not
// answered within IdleTimeout−KeepAlive the session is closed.
package tlsmux
