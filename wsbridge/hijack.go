package wsbridge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
)

// smallBufWriter wraps the upgrade's ResponseWriter so that the hijacked
// connection gets small bufio buffers instead of net/http's 4 KiB ones: most
// of the memory of an idle WebSocket would otherwise be two mostly empty
// buffers. Frames larger than a buffer bypass it, so the cost in speed is
// small.
type smallBufWriter struct {
	http.ResponseWriter
	readSize, writeSize int
	raw                 *net.Conn // set to the hijacked connection
}

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (w smallBufWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hijacks the connection and replaces its buffers, keeping any bytes
// the client sent after the handshake that net/http had already buffered.
func (w smallBufWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	*w.raw = nc
	var src io.Reader = nc
	size := w.readSize
	n := brw.Reader.Buffered()
	if n > 0 {
		early, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), nc)
		size = max(size, n)
	}
	br := bufio.NewReaderSize(src, size)
	if n > 0 {
		// Pull the early bytes into the new buffer: websocket.Accept keeps
		// what is buffered and re-points the reader at the raw connection.
		if _, err := br.Peek(n); err != nil {
			_ = nc.Close()
			return nil, nil, fmt.Errorf("hijack: re-buffer %d early bytes: %w", n, err)
		}
	}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, w.writeSize)), nil
}
