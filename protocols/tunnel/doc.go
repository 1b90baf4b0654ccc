// Package tunnel is the wire between a Postern agent and its gateway.
//
// An agent dials out to the gateway and both sides authenticate with mTLS
// (X.509-SVIDs, TLS 1.3, ALPN "postern-tunnel/1"). The result is a Session: a
// multiplexed, long-lived connection whose peer identity is fixed at the
// handshake. Either side opens streams on it; every stream is a net.Conn that
// also implements CloseWriter.
//
// Two transports implement Session and must behave alike (one conformance
// suite runs against both):
//
//   - quic: QUIC streams (quic-go). The default.
//   - tlsmux: TLS 1.3 over TCP with yamux streams, for networks that block UDP.
//     The gateway serves it on its TCP port, told apart by ALPN.
//
// # Session setup
//
// After the TLS handshake the server confirms the session with one byte
// (0x01): on a unidirectional stream over QUIC, as the first byte of the TLS
// stream before yamux starts. The client waits for it, so a client whose
// certificate the server refused learns it from Dial, not from a later read.
//
// # Streams
//
// The opener of a stream writes a Header first thing (WriteHeader): its Kind
// says whether the stream is the control stream or carries data for a
// service, and for data streams it carries the service, the audit session
// id, the caller's identity and groups and the client address. The acceptor
// reads it (ReadHeader), dials the local service and answers with a Reply, so
// that the opener can try another agent on failure. After that the stream
// carries the service's bytes unchanged.
//
// Header wire format (version 1):
//
//	"PT" | version (1 byte) | kind (1 byte) | length (uint32, big endian) | JSON body (length bytes, ≤ 64 KiB)
//
// Reply wire format:
//
//	status (1 byte: 0 OK, 1 error) | length (uint16, big endian) | UTF-8 error text (length bytes)
//
// The control stream (Kind KindControl) carries Messages: a uint32 big-endian
// length and then a JSON object of at most 1 MiB. The agent announces its
// services on it and the gateway answers "announced" once it routes them;
// both sides may ping.
//
// # Closing
//
// CloseWrite half-closes a stream: the peer reads io.EOF and may still write.
// Close closes both directions: the peer reads io.EOF, further local reads
// fail, and the peer's further writes fail (QUIC) or are discarded (yamux has
// no stream reset; see package tlsmux). Close every stream.
//
// # Liveness
//
// Both transports send keepalives every Config.KeepAlive and declare a
// silent peer dead after about Config.IdleTimeout; then Session.Done is
// closed and every stream fails.
package tunnel
