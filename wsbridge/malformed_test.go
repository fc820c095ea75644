package wsbridge

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// TestMalformedFrames sends frames the bridge or the server cannot accept:
// each gets a nack invalid_format (with the correlation id when it can be
// read), nothing panics, and this and other connections keep working.
func TestMalformedFrames(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)

	good := func() []byte { return encode(t, testBatch("src-m", "corr-x", 11, 1, 2)) }
	patch := func(f func([]byte) []byte) []byte { return f(good()) }

	huge := func(binary bool) []byte {
		p := make([]byte, 17<<20)
		if binary {
			copy(p, good())
			le.PutUint32(p[30:], uint32(len(p))) // declared payload size
		} else {
			for i := range p {
				p[i] = 'x'
			}
		}
		return p
	}

	cases := []struct {
		name     string
		typ      websocket.MessageType
		frame    []byte
		seq      uint64
		corr     string
		upstream bool // the bridge forwards it and the server refuses it
	}{
		{name: "wrong magic (read as JSON)", typ: websocket.MessageBinary, frame: patch(func(f []byte) []byte { f[0], f[1] = 0xEF, 0xBE; return f })},
		{name: "magic only", typ: websocket.MessageBinary, frame: []byte{0xC2, 0xCD}},
		{name: "truncated header", typ: websocket.MessageBinary, frame: good()[:20]},
		{name: "wrong version", typ: websocket.MessageBinary, frame: patch(func(f []byte) []byte { f[2] = 2; return f }), seq: 11, corr: "corr-x"},
		{name: "unknown type", typ: websocket.MessageBinary, frame: patch(func(f []byte) []byte { f[3] = 9; return f }), seq: 11},
		{name: "type connect in binary", typ: websocket.MessageBinary, frame: patch(func(f []byte) []byte { f[3] = 4; return f }), seq: 11},
		{name: "unknown operation", typ: websocket.MessageBinary, upstream: true, seq: 11, corr: "corr-x",
			frame: patch(func(f []byte) []byte { f[len(f)-entryOpFromEnd(f)] = 7; return f })},
		{name: "payload size beyond frame", typ: websocket.MessageBinary, upstream: true, seq: 11, corr: "corr-x",
			frame: patch(func(f []byte) []byte { le.PutUint32(f[30:], 1<<20); return f })},
		{name: "source length beyond frame", typ: websocket.MessageBinary, upstream: true, seq: 11,
			frame: patch(func(f []byte) []byte { le.PutUint16(f[24:], 0xFFFF); return f })},
		{name: "correlation length beyond frame", typ: websocket.MessageBinary, upstream: true, seq: 11,
			frame: patch(func(f []byte) []byte { le.PutUint16(f[34:], 0xFFFF); return f })},
		{name: "entry count mismatch", typ: websocket.MessageBinary, upstream: true, seq: 11, corr: "corr-x",
			frame: patch(func(f []byte) []byte { le.PutUint32(f[26:], 5); return f })},
		{name: "entry table length beyond frame", typ: websocket.MessageBinary, upstream: true, seq: 11, corr: "corr-x",
			frame: patch(func(f []byte) []byte { le.PutUint16(f[len(f)-entryOpFromEnd(f)+1:], 0xFFFF); return f })},
		{name: "truncated body", typ: websocket.MessageBinary, upstream: true, seq: 11, corr: "corr-x",
			frame: patch(func(f []byte) []byte { return f[:len(f)-3] })},
		{name: "invalid UTF-8 text", typ: websocket.MessageText, frame: []byte("{\"type\":\"heartbeat\xff\"}")},
		{name: "invalid UTF-8 in binary JSON", typ: websocket.MessageBinary, frame: []byte("{\"type\":\"\xfe\"}")},
		{name: "invalid JSON", typ: websocket.MessageText, frame: []byte(`{"type":`)},
		{name: "JSON without type", typ: websocket.MessageText, frame: []byte(`{"sourceDoId":"a"}`)},
		{name: "JSON array", typ: websocket.MessageText, frame: []byte(`[1,2]`)},
		{name: "JSON unknown type", typ: websocket.MessageText, frame: []byte(`{"type":"subscribe"}`)},
		{name: "JSON batch bad operation", typ: websocket.MessageText, seq: 4, corr: "cj",
			frame: []byte(`{"type":"cdc_batch","timestamp":1,"correlationId":"cj","sourceDoId":"src-m","sequenceNumber":4,"entries":[{"sequence":1,"timestamp":1,"operation":"UPSERT","table":"t","rowId":"r"}]}`)},
		{name: "empty text", typ: websocket.MessageText, frame: []byte{}},
		{name: "empty binary", typ: websocket.MessageBinary, frame: []byte{}},
		{name: "17 MiB binary batch", typ: websocket.MessageBinary, frame: huge(true), seq: 11, corr: "corr-x"},
		{name: "17 MiB text", typ: websocket.MessageText, frame: huge(false)},
	}

	other := env.dial(t, nil)
	connect(t, other, "src-other", "")
	c := env.dial(t, nil)
	connect(t, c, "src-m", "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fake.frameCount()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // another connection works meanwhile
				defer wg.Done()
				pingPong(t, other)
			}()
			send(t, c, tc.typ, tc.frame)
			n, _ := recvNack(t, c)
			if n.Reason != codec.NackInvalidFormat || n.ShouldRetry {
				t.Fatalf("nack %s retry=%v, want invalid_format, no retry (%q)", n.Reason, n.ShouldRetry, n.Message)
			}
			if n.Sequence != tc.seq || string(n.CorrelationID) != tc.corr {
				t.Fatalf("nack seq=%d corr=%q, want %d %q (%q)", n.Sequence, n.CorrelationID, tc.seq, tc.corr, n.Message)
			}
			if n.Message == "" {
				t.Fatal("nack without a message")
			}
			if forwarded := fake.frameCount() > before; forwarded != tc.upstream {
				t.Fatalf("forwarded upstream = %v, want %v", forwarded, tc.upstream)
			}
			pingPong(t, c)
			wg.Wait()
		})
	}
	// Still able to deliver a good batch afterwards.
	send(t, c, websocket.MessageBinary, encode(t, testBatch("src-m", "corr-ok", 12, 100, 1)))
	if a, _ := recvAck(t, c); string(a.CorrelationID) != "corr-ok" || a.Sequence != 12 {
		t.Fatalf("ack %+v", a)
	}
}

// entryOpFromEnd returns the distance from the end of a one-entry frame
// built by testBatch to its operation byte.
func entryOpFromEnd(f []byte) int {
	b, err := codec.DecodeBatch(f, codec.DecodeOptions{})
	if err != nil || len(b.Entries) == 0 {
		panic("entryOpFromEnd: bad frame")
	}
	last := b.Entries[len(b.Entries)-1]
	return 29 - 16 + len(last.Table) + len(last.RowID) + len(last.Before) + len(last.After)
}

// TestOversizedLimit checks the limit is configurable and that a message
// exactly at the limit is accepted.
func TestOversizedLimit(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), func(c *Config) { c.MaxMessageSize = 4096 })
	c := env.dial(t, nil)
	connect(t, c, "lim", "")
	b := testBatch("lim", "c1", 1, 1, 1)
	f := encode(t, b)
	pad := 4096 - len(f)
	b.Entries[0].After = []byte(`{"p":"` + strings.Repeat("a", pad-len(`{"p":""}`)+len(b.Entries[0].After)) + `"}`)
	f = encode(t, b)
	if len(f) != 4096 {
		t.Fatalf("frame is %d bytes", len(f))
	}
	send(t, c, websocket.MessageBinary, f)
	recvAck(t, c)
	b.Entries[0].After = append(b.Entries[0].After[:len(b.Entries[0].After)-2], []byte(`a"}`)...)
	b.Sequence = 2
	f = encode(t, b)
	send(t, c, websocket.MessageBinary, f)
	n, _ := recvNack(t, c)
	if n.Reason != codec.NackInvalidFormat || string(n.CorrelationID) != "c1" || n.Sequence != 2 {
		t.Fatalf("nack %+v", n)
	}
	// A JSON message over the limit without a header to declare its size.
	send(t, c, websocket.MessageText, bytes.Repeat([]byte(" "), 5000))
	if n, _ := recvNack(t, c); n.Reason != codec.NackInvalidFormat {
		t.Fatalf("nack %+v", n)
	}
	pingPong(t, c)
}
