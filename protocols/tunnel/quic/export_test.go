package quic

// Vanish closes the listener's socket and nothing else, as a process that
// dies does: its sessions' peers get no CONNECTION_CLOSE.
func (l *Listener) Vanish() error { return l.pc.Close() }
