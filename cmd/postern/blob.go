package main

// The blob stores recordings can be copied to (gateway --recordings-url)
// and fetched from (audit --recordings URL): a local directory, S3 and
// S3-compatible stores (MinIO, R2, and Google Cloud Storage through its S3
// interoperability). Another gocloud.dev/blob driver (gcsblob: +30 MB) is
// one import here.
import (
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/s3blob"
)
