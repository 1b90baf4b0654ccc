// Package store is the gateway's seam to durable state: used join tokens,
// the record of issued SVIDs, the agents that have connected, the API keys
// and the index of recorded sessions.
//
// The gateway and the admin commands work against the Store interface only,
// so that the embedded SQLite database (package store/sqlite, the default)
// can be replaced by a shared PostgreSQL database when several gateways run
// side by side.
package store
