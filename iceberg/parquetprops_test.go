package iceberg

import (
	"context"
	"testing"
)

// TestChangelogColumnsWithoutDictionary: entry_seq, the row images and the
// row id are written without a Parquet dictionary (each nearly distinct: the
// dictionary is built for every page and then dropped by the cost-based
// fallback, CPU for nothing), on new tables and, from their next commit, on
// tables created with a dictionary for them. A user's table property wins.
func TestChangelogColumnsWithoutDictionary(t *testing.T) {
	dir := t.TempDir()
	dictKey := dictColumnPrefix + "entry_seq"
	props := func(s *Sink) map[string]string {
		t.Helper()
		tbl, err := s.LoadTable(context.Background(), "users")
		if err != nil {
			t.Fatal(err)
		}
		return tbl.Properties()
	}
	// A table created as before: entry_seq with a dictionary.
	s := openTestSink(t, dir, func(c *Config) { c.TableProperties = map[string]string{dictKey: "true"} })
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 8))
	if got := props(s)[dictKey]; got != "true" {
		t.Fatalf("%s = %q on a table created with it true", dictKey, got)
	}
	s.Close()

	s2 := openTestSink(t, dir, nil)
	mustCommit(t, s2, w1Flush(2, oneSource, 2, 1, 8))
	for _, col := range []string{"entry_seq", "before", "after", "row_id"} {
		if got := props(s2)[dictColumnPrefix+col]; got != "false" {
			t.Errorf("%s%s = %q after a commit by a sink with defaults, want false", dictColumnPrefix, col, got)
		}
	}
	s2.Close()
	// A new table gets them at creation.
	fresh := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, fresh, w1Flush(1, oneSource, 1, 1, 8))
	if got := props(fresh)[dictKey]; got != "false" {
		t.Errorf("%s = %q on a new table", dictKey, got)
	}

	s3 := openTestSink(t, dir, func(c *Config) { c.TableProperties = map[string]string{dictKey: "true"} })
	mustCommit(t, s3, w1Flush(4, oneSource, 3, 1, 8))
	if got := props(s3)[dictKey]; got != "true" {
		t.Errorf("%s = %q after a commit with the user's property true", dictKey, got)
	}
}
