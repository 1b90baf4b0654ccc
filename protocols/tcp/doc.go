// Package tcp relays an opaque byte stream between a client connection and a
// tunnel stream. A TCP service is authorized once, when the connection is
// made; after that the relay only copies bytes, keeps each direction's
// half-close, and reports how many bytes went each way so that the recording
// holds a timed byte count of the session.
package tcp
