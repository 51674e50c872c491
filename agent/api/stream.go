package api

import (
	"context"
	"fmt"
	"io"
)

// CopyStream reads a container's (or exec's) stdout, or stderr when stderr is set, from the
// agent in reads of at most n bytes (0: the agent's default) and writes it to w until the
// agent reports EOF. denied is true when the sealed policy withholds the output (logs: deny);
// the stream then ends with no data.
func CopyStream(ctx context.Context, a AgentService, name, execID string, stderr bool, n uint32, w io.Writer) (denied bool, err error) {
	for {
		req := &ReadStreamRequest{Name: name, ExecId: execID, Len: n}
		var r *ReadStreamResponse
		if stderr {
			r, err = a.ReadStderr(ctx, req)
		} else {
			r, err = a.ReadStdout(ctx, req)
		}
		if err != nil {
			return false, fmt.Errorf("read %s %s/%s from the guest: %w", streamName(stderr), name, execID, err)
		}
		if len(r.Data) > 0 {
			if _, err := w.Write(r.Data); err != nil {
				return false, fmt.Errorf("write %s of %s/%s: %w", streamName(stderr), name, execID, err)
			}
		}
		if r.Eof {
			return r.Denied, nil
		}
	}
}

func streamName(stderr bool) string {
	if stderr {
		return "stderr"
	}
	return "stdout"
}
