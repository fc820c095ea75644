package iceberg

import "github.com/prometheus/client_golang/prometheus"

// The mirror writers' in-memory order indexes, as gauges: their memory
// follows the number of keys (about 105 bytes plus the key each).
func mirrorIndexDescs() (keys, tombstones *prometheus.Desc) {
	return prometheus.NewDesc("lakehouse_mirror_index_keys", "Keys in the mirror writer's in-memory order indexes, tombstones included (about 105 bytes plus the key each).", nil, nil),
		prometheus.NewDesc("lakehouse_mirror_index_tombstones", "Deleted keys the mirror writer's order indexes remember (tombstones).", nil, nil)
}

func describeMirrorIndex(ch chan<- *prometheus.Desc) {
	keys, tombs := mirrorIndexDescs()
	ch <- keys
	ch <- tombs
}

func collectMirrorIndex(ch chan<- prometheus.Metric, m MirrorTotals) {
	keys, tombs := mirrorIndexDescs()
	ch <- prometheus.MustNewConstMetric(keys, prometheus.GaugeValue, float64(m.IndexKeys))
	ch <- prometheus.MustNewConstMetric(tombs, prometheus.GaugeValue, float64(m.IndexTombstones))
}

// reportIndex brings the index gauges of the totals up to date with idx;
// gone: the index was dropped.
func (s *Sink) reportIndex(idx *mirrorIndex, gone bool) {
	keys, tombs := idx.entries.len(), idx.tombstones
	if gone {
		keys, tombs = 0, 0
	}
	s.countMirror(func(t *MirrorTotals) {
		t.IndexKeys += int64(keys - idx.reportedKeys)
		t.IndexTombstones += int64(tombs - idx.reportedTombstones)
	})
	idx.reportedKeys, idx.reportedTombstones = keys, tombs
}
