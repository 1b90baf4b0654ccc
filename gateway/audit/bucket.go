package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Recordings may also live in a blob store: the gateway writes each
// recording in its directory (appending, and sealing after a crash, need a
// local file) and copies it, once sealed, to a bucket named by a URL
// (gocloud.dev/blob: file:///path, s3://bucket?region=…, gs://bucket).
// Auditors fetch the bucket's recordings into a directory and work there.

// Upload copies the sealed recording of id in dir to b, as the object
// <id>.jsonl.zst (replacing one of the same name).
func Upload(ctx context.Context, b *blob.Bucket, dir, id string) error {
	f, err := os.Open(Path(dir, id))
	if err != nil {
		return fmt.Errorf("uploading recording: %w", err)
	}
	defer f.Close()
	w, err := b.NewWriter(ctx, id+Ext, &blob.WriterOptions{ContentType: "application/zstd"})
	if err != nil {
		return fmt.Errorf("uploading recording %s: %w", id, err)
	}
	if _, err := io.Copy(w, f); err != nil {
		w.Close()
		return fmt.Errorf("uploading recording %s: %w", id, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("uploading recording %s: %w", id, err)
	}
	return nil
}

// UploadMissing uploads every sealed recording in dir that b does not hold
// yet (with the same size), and returns how many it uploaded: the gateway
// runs it at start for what a stop kept from being uploaded.
func UploadMissing(ctx context.Context, b *blob.Bucket, dir string) (int, error) {
	files, err := List(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		if f.Kind != Sealed {
			continue
		}
		fi, err := os.Stat(f.Path)
		if err != nil {
			return n, err
		}
		attrs, err := b.Attributes(ctx, f.Session+Ext)
		if err == nil && attrs.Size == fi.Size() {
			continue
		}
		if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return n, fmt.Errorf("checking recording %s in the bucket: %w", f.Session, err)
		}
		if err := Upload(ctx, b, dir, f.Session); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Download copies every recording in b into dir that dir does not hold yet
// with the same size, and returns how many it copied. Objects whose names
// are not recordings are skipped.
func Download(ctx context.Context, b *blob.Bucket, dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("fetching recordings: %w", err)
	}
	it := b.List(&blob.ListOptions{})
	n := 0
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("listing the bucket: %w", err)
		}
		if obj.IsDir || strings.Contains(obj.Key, "/") {
			continue
		}
		if _, kind := ParseName(obj.Key); kind == NotRecording {
			continue
		}
		dst := filepath.Join(dir, obj.Key)
		if fi, err := os.Stat(dst); err == nil && fi.Size() == obj.Size {
			continue
		}
		if err := fetch(ctx, b, obj.Key, dst); err != nil {
			return n, err
		}
		n++
	}
}

func fetch(ctx context.Context, b *blob.Bucket, key, dst string) error {
	r, err := b.NewReader(ctx, key, nil)
	if err != nil {
		return fmt.Errorf("fetching recording %s: %w", key, err)
	}
	defer r.Close()
	tmp := dst + ".fetch"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("fetching recording %s: %w", key, err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fetching recording %s: %w", key, err)
	}
	return nil
}
