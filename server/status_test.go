package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestStreamErrorsKeepTheirCode checks that a status error made while handling
// a request reaches the client with its own code, not re-wrapped as INTERNAL:
// clients decide whether to reconnect from the code.
func TestStreamErrorsKeepTheirCode(t *testing.T) {
	in := servertest.Start(t)
	cc := in.Dial()
	tests := []struct {
		name string
		req  *lakehousev1.StreamRequest
		code codes.Code
	}{
		{"second connect", &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "codes"}}}, codes.FailedPrecondition},
		{"empty request", &lakehousev1.StreamRequest{}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := openStream(t, cc, "codes", 0)
			if err := ts.st.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			_, err := ts.st.Recv()
			st := status.Convert(err)
			if st.Code() != tc.code || strings.Contains(st.Message(), "code =") {
				t.Fatalf("stream ended with %v, want code %v with its own message", err, tc.code)
			}
		})
	}
}
