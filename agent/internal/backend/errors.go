package backend

import (
	"fmt"
	"log/slog"

	"github.com/sealpod/sealpod/agent/errkind"
)

// Redact turns a backend error into one that names the operation, the container and the
// failure kind only (agent/errkind: containers.Err*, image.Err*, or "failed"); everything
// else in a backend error (image references, paths, commands from the sealed spec) stays in
// the guest. The debug log shows the same kind: the console is host-visible too.
func Redact(log *slog.Logger, op, name string, err error) error {
	if err == nil {
		return nil
	}
	log.Debug("backend error (details not sent to the host)", "op", op, "container", name, "err", err)
	return fmt.Errorf("%s %s: %w", op, name, errkind.Withhold(errkind.Of(err), err))
}
