package audit

import (
	"bufio"
	"errors"
	"fmt"
	"os"

	"github.com/klauspost/compress/zstd"
)

// compactExt names the file Compact writes before it replaces the sealed
// one; one left by a crash is removed by RecoverUnsealed.
const compactExt = ".compact.tmp"

// Compact rewrites the sealed recording of session id in dir with large
// zstd frames: the same records, byte for byte, so it verifies the same,
// but smaller and several times faster to read than the small blocks the
// writer makes to put every event in the file at once. The new file
// replaces the old one by rename only after it was written, synced and
// read back; a recording that does not read cleanly is left as it is.
func Compact(dir, id string) error {
	path := Path(dir, id)
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compacting recording: %w", err)
	}
	defer src.Close()
	tmp := path + compactExt
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compacting recording: %w", err)
	}
	defer func() {
		dst.Close()
		os.Remove(tmp) // gone after a successful rename
	}()
	bw := bufio.NewWriterSize(dst, 256<<10)
	enc := archivers.Get().(*zstd.Encoder)
	defer func() {
		enc.Reset(nil)
		archivers.Put(enc)
	}()
	enc.Reset(bw)
	raw := 0
	var werr error
	t, err := readFrom(src, Sealed, id, nil, func(_ Record, line []byte) error {
		if _, werr = enc.Write(line); werr == nil {
			_, werr = enc.Write(newline)
		}
		if raw += len(line) + 1; werr == nil && raw >= frameSize {
			werr, raw = enc.Close(), 0
			enc.Reset(bw)
		}
		return werr
	})
	if err != nil {
		return fmt.Errorf("compacting recording: %w", err)
	}
	if !t.sealed {
		return errors.New("compacting recording: not sealed")
	}
	err = enc.Close()
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = dst.Sync()
	}
	if err == nil {
		err = dst.Close()
	}
	if err == nil {
		err = sameAs(tmp, id, t)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("compacting recording: %w", err)
	}
	return nil
}

var newline = []byte{'\n'}

// sameAs checks that the recording at path reads back as t.
func sameAs(path, id string, t tail) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	back, err := readFrom(f, Sealed, id, nil, nil)
	if err == nil && (back.next != t.next || back.prev != t.prev || !back.sealed) {
		err = errors.New("the rewritten recording reads back differently")
	}
	return err
}
