package main

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/audit/replay"
)

const replayUsage = "replay ID [--speed N] [--format text|json] [--data-dir DIR] [--recordings DIR|URL] [--key FILE]"

// runReplay plays a recorded session back on stdout, verifying its chain
// as it reads, and its seal at the end when the public audit key is at
// hand; a broken recording plays up to the break, then fails naming the
// record.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", replayUsage, stderr)
	speed := fs.Float64("speed", 1, "playback speed: 1 is the original timing, 2 twice as fast, 0 no waiting")
	format := fs.String("format", "text", "output format: text (a transcript) or json (one event a line)")
	af := addAuditFlags(fs, true)
	id, err := sessionArg(fs, args, replayUsage)
	if err != nil {
		return err
	}
	if math.IsNaN(*speed) || math.IsInf(*speed, 0) || *speed < 0 {
		return usagef("--speed %v: want 0 (no waiting) or more", *speed)
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	a, done, err := af.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	file, err := audit.Find(a.Dir, id)
	if err != nil {
		return err
	}
	keys, err := af.keys()
	if err != nil && af.key != "" {
		return err // asked for, and not there
	}
	err = replay.Play(ctx, file.Path, stdout, replay.Options{Speed: *speed, Format: *format, Keys: keys})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("replay %s: interrupted", id)
	}
	return err
}
