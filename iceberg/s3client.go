package iceberg

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/apache/iceberg-go/io/gocloud/s3"
	"github.com/apache/iceberg-go/utils"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// S3 connection settings of the sink's shared S3 HTTP client.
const (
	// s3ResponseHeaderTimeout fails a request whose response has not
	// begun this long after the request was sent in full. Contexts bound
	// the sink's S3 calls already; this bounds one a caller left without a
	// deadline, on a half-open connection to a stalled or vanished store.
	// (Not a read timeout on the connection: the HTTP transport reads
	// while it uploads, so one would fail a long upload, which is why the
	// AWS SDK exempts S3 from its own.)
	s3ResponseHeaderTimeout = 2 * time.Minute
	// s3MaxIdleConnsPerHost keeps as many connections to the store as
	// parallel uploads and manifest reads use (the SDK's default keeps 10),
	// as iceberg-go's own S3 client does.
	s3MaxIdleConnsPerHost = 256
	// s3IdleConnTimeout closes a pooled connection unused this long.
	s3IdleConnTimeout = 90 * time.Second
)

// sharedS3Config returns the AWS configuration every S3 IO of the sink
// shares, and the tracker of its client's connections (nil for a client of
// the user's own), or nils when the sink does not use S3 (no s3 warehouse,
// no s3.* property).
//
// Without it iceberg-go loads a new AWS configuration, with a new HTTP
// client and connection pool, for every IO it opens (io.LoadFS: one per
// table load, manifest read or write): 20 commits opened over 1,000
// connections, none reused, each left open until its idle timeout, and
// requests had no timeout of their own. An IO opened under a context that
// carries this configuration (withS3Config) uses its client instead; the
// table's own s3.* properties (region, credentials, endpoint) still apply.
func sharedS3Config(ctx context.Context, cfg *Config) (*aws.Config, *connTracker, error) {
	if !usesS3(cfg) {
		return nil, nil, nil
	}
	awscfg, err := s3.ParseAWSConfig(ctx, cfg.catalogProps())
	if err != nil {
		return nil, nil, fmt.Errorf("iceberg: s3 configuration: %w", err)
	}
	hc, ok := awscfg.HTTPClient.(*awshttp.BuildableClient)
	switch {
	case awscfg.HTTPClient == nil:
		hc = awshttp.NewBuildableClient()
	case !ok:
		return awscfg, nil, nil // a client of the user's own: theirs to tune
	}
	conns := newConnTracker()
	awscfg.HTTPClient = hc.WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = s3MaxIdleConnsPerHost
		t.IdleConnTimeout = s3IdleConnTimeout
		dial := t.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		t.DialContext = conns.dial(dial)
		t.ResponseHeaderTimeout = s3ResponseHeaderTimeout
	})
	return awscfg, conns, nil
}

// usesS3 reports whether the sink's tables may live on S3.
func usesS3(cfg *Config) bool {
	if u, err := url.Parse(cfg.Warehouse); err == nil {
		switch strings.ToLower(u.Scheme) {
		case "s3", "s3a", "s3n": // iceberg-go's S3 IO schemes
			return true
		}
	}
	for k := range cfg.Properties {
		if strings.HasPrefix(k, "s3.") {
			return true
		}
	}
	return false
}

// ioContext returns ctx carrying the sink's shared S3 configuration, for
// the IOs opened under it.
func (s *Sink) ioContext(ctx context.Context) context.Context { return withS3Config(ctx, s.s3cfg) }

// withS3Config returns ctx carrying awscfg (none when nil) for the S3 IOs
// iceberg-go opens under it.
func withS3Config(ctx context.Context, awscfg *aws.Config) context.Context {
	if awscfg == nil || utils.GetAwsConfig(ctx) == awscfg {
		return ctx
	}
	return utils.WithAwsConfig(ctx, awscfg)
}
