// Package ui serves the auditors' web page, `postern audit ui`: the list of
// recorded sessions with filters and a verification badge per session, and
// a player that replays one session's events with their timing.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary (no
// build step, nothing fetched from elsewhere), under a Content-Security-Policy
// that allows only the page's own files. It reads everything through a small
// JSON API over an audit.Archive:
//
//	GET /api/sessions?identity=&service=&outcome=&protocol=&since=&until=&limit=&offset=
//	GET /api/sessions/{id}
//	GET /api/sessions/{id}/events?from=SEQ&limit=N
//	GET /api/sessions/{id}/verify
//
// Lists are filtered by the index and come a page at a time; events are
// streamed from the recording a page at a time, so a long recording is
// never read into memory whole. The page has no login: serve it on loopback
// (LocalOnly refuses requests for other host names, against DNS rebinding).
// docs/AUDIT_UI.md describes it.
package ui
