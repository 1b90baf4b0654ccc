// Package quic carries Postern tunnel sessions over QUIC (quic-go), the
// default transport between agent and gateway: one UDP flow, streams without
// head-of-line blocking between them, and connection migration when an
// agent's address changes.
//
// Streams are quic-go streams wrapped so that they satisfy net.Conn and
// tunnel.CloseWriter: CloseWrite sends FIN; Close sends FIN and stops reading
// (STOP_SENDING), so further local reads fail and the peer's writes fail.
// The peer's MaxStreams limit makes OpenStream wait for credit.
package quic
