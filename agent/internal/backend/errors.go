package backend

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/sealpod/sealpod/agent/containers"
	"github.com/sealpod/sealpod/agent/containers/image"
)

// publicErrors are the failure classes the host may learn; everything else in a backend error
// (image references, paths, commands from the sealed spec) stays in the guest.
var publicErrors = []error{
	containers.ErrUnknownContainer, containers.ErrExists, containers.ErrNoPod, containers.ErrNotStarted,
	containers.ErrAlreadyStarted, containers.ErrInvalid,
	image.ErrNotPinned, image.ErrDigestMismatch, image.ErrInsecureTransport, image.ErrUnsafePath,
	image.ErrDeviceNode, image.ErrTooLarge, image.ErrBadEntry,
}

// Redact turns a backend error into one that names the operation, the container and the
// failure class only. The full error goes to the debug log (sealpod.debug=1 on the measured
// command line: the owner's choice, since the console is host-visible).
func Redact(log *slog.Logger, op, name string, err error) error {
	if err == nil {
		return nil
	}
	log.Debug("backend error (not sent to the host)", "op", op, "container", name, "err", err.Error())
	for _, e := range publicErrors {
		if errors.Is(err, e) {
			return fmt.Errorf("%s %s: %w (details withheld: sealed content)", op, name, e)
		}
	}
	return fmt.Errorf("%s %s: failed (details withheld: sealed content; boot with sealpod.debug=1 to log them)", op, name)
}
