package iceberg

import (
	"context"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/icebergcheck"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

// commitRows commits one single-row flush per after (keys k1, k2, ...) and
// returns the model of the result.
func commitRows(t *testing.T, s *Sink, tableName string, afters ...string) *mirrormodel.Model {
	t.Helper()
	m := mirrormodel.New()
	for i, after := range afters {
		f := oneRowFlush(uint64(i+1), tableName, "k"+string(rune('1'+i)), after)
		mustCommit(t, s, f)
		r := f.Tables[0].Rows[0]
		m.CommitBatch(r.SourceID, []codec.Entry{r.Entry})
	}
	return m
}

// checkWithReaders compares the mirror table with the model through both
// of icebergcheck's readers (its own Parquet reader and iceberg-go's scan).
func checkWithReaders(t *testing.T, s *Sink, name string, m *mirrormodel.Model) {
	t.Helper()
	ctx := context.Background()
	tbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	own, err := icebergcheck.ReadTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	icebergcheck.CompareMirror(t, name+" (own reader)", own.Rows, m.Rows(name))
	scan, err := icebergcheck.ScanTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	icebergcheck.CompareMirror(t, name+" (scan)", scan.Rows, m.Rows(name))
}

func columnType(t *testing.T, s *Sink, tableName, col string) string {
	t.Helper()
	tbl, err := s.LoadMirrorTable(context.Background(), tableName)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := tbl.Schema().FindFieldByName(col)
	if !ok {
		return ""
	}
	return f.Type.String()
}

// TestMirrorInferTimestamps: with MirrorInferTimestamps, a column whose
// first value is an RFC 3339 string is timestamptz (nested too); a later
// string that is not one (or that has more than microsecond precision)
// sends its row to _extra, counted. Off, the same rows make string columns.
func TestMirrorInferTimestamps(t *testing.T) {
	afters := []string{
		`{"at":"2024-05-01T12:00:00.123Z","s":"plain","d":"2024-05-01","n":{"t":"2024-05-01T12:00:00+02:00"}}`,
		`{"at":"2024-05-01T14:30:00.000001+02:00","n":{"t":"1999-12-31T23:59:59Z"}}`,
		`{"at":"tomorrow"}`,
		`{"at":"2024-05-01T12:00:00.1234567Z"}`,
		`{"n":{"t":"soon"}}`,
		`{"at":1714564800}`,
	}
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorInferTimestamps = true })
	m := commitRows(t, s, "t", afters...)
	for col, want := range map[string]string{"at": "timestamptz", "s": "string", "d": "string", "n.t": "timestamptz"} {
		if got := columnType(t, s, "t", col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	checkWithReaders(t, s, "t", m)
	if n := s.MirrorTotals().ExtraRows; n != 4 {
		t.Errorf("extra rows %d, want 4", n)
	}

	off := openTestSink(t, t.TempDir(), mirrorOn)
	m = commitRows(t, off, "t", afters...)
	for _, col := range []string{"at", "n.t"} {
		if got := columnType(t, off, "t", col); got != "string" {
			t.Errorf("inference off: column %s is %s", col, got)
		}
	}
	checkWithReaders(t, off, "t", m)
	if n := off.MirrorTotals().ExtraRows; n != 1 {
		t.Errorf("inference off: extra rows %d, want 1 (the number)", n)
	}
}

func TestParseTimestamp(t *testing.T) {
	for s, want := range map[string]bool{
		"2024-05-01T12:00:00Z": true, "2024-05-01T12:00:00.123456-07:00": true, "2024-05-01T12:00:00.1234567Z": false,
		"2024-05-01 12:00:00Z": false, "2024-05-01T12:00:00": false, "2024-05-01": false, "2024-13-01T12:00:00Z": false, "": false,
	} {
		if _, got := parseTimestamp(s); got != want {
			t.Errorf("parseTimestamp(%q) = %v, want %v", s, got, want)
		}
	}
}
