package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
)

// TestBucket: a Log with a bucket copies each sealed recording there;
// UploadMissing copies what it missed; Download fetches them into another
// directory, where they verify.
func TestBucket(t *testing.T) {
	ctx := context.Background()
	store := t.TempDir()
	b, err := blob.OpenBucket(ctx, "file://"+store+"?metadata=skip")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{Bucket: b})
	for _, e := range sessionEvents("s-1", 2) {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	local, _ := os.ReadFile(Path(dir, "s-1"))
	remote, err := b.ReadAll(ctx, "s-1"+Ext)
	if err != nil || !bytes.Equal(local, remote) {
		t.Fatalf("bucket copy: %v, equal %v", err, bytes.Equal(local, remote))
	}

	validRecording(t, dir, "s-2", 1) // written without the bucket
	if n, err := UploadMissing(ctx, b, dir); err != nil || n != 1 {
		t.Fatalf("UploadMissing: %d, %v; want 1", n, err)
	}
	if n, err := UploadMissing(ctx, b, dir); err != nil || n != 0 {
		t.Fatalf("UploadMissing again: %d, %v; want 0", n, err)
	}
	if err := b.WriteAll(ctx, "notes.txt", []byte("not a recording"), nil); err != nil {
		t.Fatal(err)
	}

	auditor := filepath.Join(t.TempDir(), "copy")
	if n, err := Download(ctx, b, auditor); err != nil || n != 2 {
		t.Fatalf("Download: %d, %v; want 2", n, err)
	}
	for _, id := range []string{"s-1", "s-2"} {
		if res, err := Verify(Path(auditor, id), trusted(t)); err != nil || !res.Sealed {
			t.Fatalf("%s fetched: %+v, %v", id, res, err)
		}
	}
	if n, err := Download(ctx, b, auditor); err != nil || n != 0 {
		t.Fatalf("Download again: %d, %v; want 0", n, err)
	}
}
