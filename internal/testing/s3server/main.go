// Command s3server is a small S3-compatible server for tests: gofakes3 with
// an in-memory backend, run as its own process so that a test can pause it
// (SIGSTOP), resume it (SIGCONT) or kill it like a real object store. The
// integration tests use it when no SeaweedFS binary is at hand (see
// integration/s3proc_test.go).
//
// It listens on -addr (port 0 picks a free one) and prints one line,
// "listening on HOST:PORT", on stdout once it accepts connections. Buckets
// are created with an anonymous PUT /<bucket>; request signatures are not
// checked. Objects live in memory and are lost when the process ends.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*addr); err != nil {
		log.Fatal(err)
	}
}

func run(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// A paused process resumes with its clock far ahead of the requests'
	// signing times only after long pauses; allow an hour rather than
	// gofakes3's default 15 minutes.
	faker := gofakes3.New(s3mem.New(), gofakes3.WithTimeSkewLimit(time.Hour))
	srv := &http.Server{Handler: faker.Server(), ReadHeaderTimeout: time.Minute}
	fmt.Printf("listening on %s\n", lis.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case err := <-errc:
		return err
	case <-sig:
	}
	if err := srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
