package shim

import (
	"context"
	"encoding/json"
	"io"
	"syscall"

	"github.com/containerd/fifo"

	"github.com/sealpod/sealpod/agent/api"
)

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

func openFifoWrite(ctx context.Context, path string) (io.WriteCloser, error) {
	return fifo.OpenFifo(ctx, path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
}

// copyStreams copies the guest's stdout and stderr of p into containerd's FIFOs until EOF.
func (s *Service) copyStreams(t *task, p *proc, a api.AgentService) {
	for _, st := range []struct {
		path   string
		stderr bool
	}{{p.stdout, false}, {p.stderr, true}} {
		if st.path == "" {
			continue
		}
		p.copying.Add(1)
		go func(path string, stderr bool) {
			defer p.copying.Done()
			w, err := fifo.OpenFifo(context.Background(), path, syscall.O_WRONLY, 0)
			if err != nil {
				s.log.Warn("open stdio fifo", "container", t.name, "path", path, "err", err)
				return
			}
			defer w.Close()
			denied, err := api.CopyStream(context.Background(), a, t.name, p.execID, stderr, 64<<10, w)
			if err != nil {
				s.log.Warn("copy guest stream", "container", t.name, "exec", p.execID, "stderr", stderr, "err", err)
				return
			}
			if denied {
				s.log.Info("guest denies logs (sealed policy logs: deny)", "container", t.name)
			}
		}(st.path, st.stderr)
	}
}
