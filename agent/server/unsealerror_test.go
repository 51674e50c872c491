package server

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/kbs/client"
)

// The shim and the kubelet show the code: refusals must not look like outages.
func TestUnsealErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", envelope.ErrMalformed), codes.InvalidArgument},
		{fmt.Errorf("x: %w", unseal.ErrHostData), codes.PermissionDenied},
		{fmt.Errorf("x: %w", unseal.ErrNoVolumeSecret), codes.FailedPrecondition},
		{&client.APIError{Status: 403}, codes.PermissionDenied},
		{&client.APIError{Status: 404}, codes.NotFound},
		{&client.APIError{Status: 400}, codes.PermissionDenied},
		{&client.APIError{Status: 503}, codes.Unavailable},
		{&client.APIError{Status: 429}, codes.Unavailable},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("start pod: boom"), codes.Internal},
	} {
		if got := status.Code(unsealError(tc.err)); got != tc.want {
			t.Errorf("unsealError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
