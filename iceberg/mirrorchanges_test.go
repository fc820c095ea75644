package iceberg

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	icebergio "github.com/apache/iceberg-go/io"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// TestMirrorChangeFileRoundTrip: a change file reads back as the changes
// written (inserts, updates, deletes, empty and non-ASCII afters); a file
// whose SHA-256 differs from the part's, or that is truncated, or whose
// op is unknown, is refused with an error naming the file, never a panic.
func TestMirrorChangeFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	mp := partOf([]mirrorChange{
		{key: "k1", source: "src-a", entry: 7, eventMs: 1_700_000_000_123, op: codec.OpInsert, after: `{"a":1}`},
		{key: "k2", source: "src-b", entry: 1 << 40, eventMs: 5, op: codec.OpUpdate, after: `{"name":"Zoë ✓"}`},
		{key: "k3", source: "src-a", entry: 9, eventMs: 6, op: codec.OpDelete},
		{key: "", source: "src-a", entry: 10, eventMs: 6, op: codec.OpUpdate, after: `{}`},
	}...)
	data, err := encodeMirrorChanges(mp)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) changeFile {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		return changeFile{path: p, sha256: hex.EncodeToString(sum[:])}
	}
	fs := icebergio.LocalFS{}
	cf := write("good.parquet", data)
	got := &mirrorPart{}
	if err := readMirrorChanges(fs, cf, got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.all(), mp.all()) {
		t.Fatalf("read back %+v, wrote %+v", got.all(), mp.all())
	}
	// The part built from a file's data owns its strings.
	direct, buf := &mirrorPart{}, slices.Clone(data)
	if err := decodeMirrorChanges(buf, direct); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	if !reflect.DeepEqual(direct.all(), mp.all()) {
		t.Fatalf("after its data was overwritten, read %+v, wrote %+v", direct.all(), mp.all())
	}

	bad := cf
	bad.sha256 = strings.Repeat("0", 64)
	if err := readMirrorChanges(fs, bad, &mirrorPart{}); err == nil || !strings.Contains(err.Error(), "SHA-256") || !strings.Contains(err.Error(), cf.path) {
		t.Errorf("wrong SHA-256: %v", err)
	}
	trunc := write("truncated.parquet", data[:len(data)/2])
	if err := readMirrorChanges(fs, trunc, &mirrorPart{}); err == nil || !strings.Contains(err.Error(), trunc.path) {
		t.Errorf("truncated file: %v", err)
	}
	odd, err := encodeMirrorChanges(partOf(mirrorChange{key: "k", source: "s", op: codec.Op(9), after: "{}"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := readMirrorChanges(fs, write("odd.parquet", odd), &mirrorPart{}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op: %v", err)
	}
	if err := readMirrorChanges(fs, changeFile{path: filepath.Join(dir, "gone.parquet")}, &mirrorPart{}); err == nil {
		t.Error("a missing file read without error")
	}
}
