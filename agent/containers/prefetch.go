package containers

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// DefaultPullParallelism is how many images are pulled at once from StartPod on.
const DefaultPullParallelism = 3

// prefetch pulls and unpacks every image of the sealed spec from StartPod on (the agent calls
// StartPod right after unsealing), a bounded number at a time, init containers' images
// first. Each unpack goes to a staging directory; Create takes (renames) the staged root
// filesystem of its image, waiting for it if it is still in flight. An image used by several
// containers is resolved once and unpacked once per container, the next copy starting when
// one is taken. A container created again (a restart), or one whose staged pull failed, pulls
// its image itself as before.
type prefetch struct {
	dir    string // StateDir/images
	opts   image.PullOptions
	limits func() *image.Limits
	log    *slog.Logger

	ctx    context.Context // canceled by close
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	jobs   map[string]*imageJob // by image reference
	seq    int
	closed bool
}

// imageJob is one image of the spec.
type imageJob struct {
	ref string
	// pending are the containers that have not taken a staged copy yet.
	pending map[string]bool
	// cur is the staged copy in flight or ready; nil when none is wanted.
	cur *staged
	// img is the resolved (verified) image, once a pull succeeded: later copies reuse it.
	img *image.Image
}

// staged is one pull + unpack into dir/rootfs; done is closed when it has finished.
type staged struct {
	done   chan struct{}
	dir    string
	img    *image.Image
	err    error
	pull   time.Duration // resolving manifest and config (0 when reused)
	unpack time.Duration
}

func (st *staged) rootfs() string { return filepath.Join(st.dir, "rootfs") }

// startPrefetch starts pulling the images of s. parallelism <= 0 means the default.
func startPrefetch(dir string, s *spec.Spec, opts image.PullOptions, limits func() *image.Limits, parallelism int, log *slog.Logger) (*prefetch, error) {
	if parallelism <= 0 {
		parallelism = DefaultPullParallelism
	}
	if err := removeTree(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("image staging dir %s: %w", dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts.Logger = log
	pf := &prefetch{dir: dir, opts: opts, limits: limits, log: log, ctx: ctx, cancel: cancel,
		sem: make(chan struct{}, parallelism), jobs: map[string]*imageJob{}}
	var order []*imageJob
	for _, cs := range [][]spec.Container{s.InitContainers, s.Containers} {
		for _, c := range cs {
			j := pf.jobs[c.Image]
			if j == nil {
				j = &imageJob{ref: c.Image, pending: map[string]bool{}}
				pf.jobs[c.Image] = j
				order = append(order, j)
			}
			j.pending[c.Name] = true
		}
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	for _, j := range order {
		j.cur = pf.start(j)
	}
	log.Info("pulling the sealed images", "count", len(order))
	return pf, nil
}

// start launches a staged copy of j (caller holds pf.mu).
func (pf *prefetch) start(j *imageJob) *staged {
	pf.seq++
	st := &staged{done: make(chan struct{}), dir: filepath.Join(pf.dir, strconv.Itoa(pf.seq))}
	img := j.img
	pf.wg.Add(1)
	go func() {
		defer pf.wg.Done()
		defer close(st.done)
		st.err = pf.run(st, j.ref, img)
		if st.err != nil {
			_ = removeTree(st.dir)
			pf.log.Warn("image pull from unseal on failed (reported at create)", "err", st.err)
			return
		}
		pf.mu.Lock()
		if j.img == nil {
			j.img = st.img
		}
		pf.mu.Unlock()
	}()
	return st
}

func (pf *prefetch) run(st *staged, ref string, img *image.Image) error {
	select {
	case pf.sem <- struct{}{}:
	case <-pf.ctx.Done():
		return pf.ctx.Err()
	}
	defer func() { <-pf.sem }()
	t0 := time.Now()
	if img == nil {
		var err error
		if img, err = image.Pull(pf.ctx, ref, pf.opts); err != nil {
			return err
		}
	}
	t1 := time.Now()
	if err := os.MkdirAll(st.rootfs(), 0o755); err != nil {
		return fmt.Errorf("staged rootfs: %w", err)
	}
	if err := image.Unpack(pf.ctx, img, st.rootfs(), pf.limits()); err != nil {
		return err
	}
	st.img, st.pull, st.unpack = img, t1.Sub(t0), time.Since(t1)
	return nil
}

// take waits for the staged copy of ref meant for container name and hands it over: the
// caller owns st.dir (st.err set: already removed). It returns nil, nil when there is no
// staged copy for name (a restart, a closed pod): the caller pulls itself.
func (pf *prefetch) take(ctx context.Context, name, ref string) (*staged, error) {
	for {
		pf.mu.Lock()
		j := pf.jobs[ref]
		if pf.closed || j == nil || !j.pending[name] || j.cur == nil {
			pf.mu.Unlock()
			return nil, nil
		}
		st := j.cur
		pf.mu.Unlock()
		select {
		case <-st.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		pf.mu.Lock()
		if j.cur != st || pf.closed {
			// Another container of the same image took it (or the pod closed): look again.
			pf.mu.Unlock()
			continue
		}
		delete(j.pending, name)
		j.cur = nil
		if len(j.pending) > 0 {
			j.cur = pf.start(j)
		}
		pf.mu.Unlock()
		return st, nil
	}
}

// close cancels the pulls, waits for them and removes every staged copy not taken.
func (pf *prefetch) close() error {
	pf.mu.Lock()
	pf.closed = true
	pf.mu.Unlock()
	pf.cancel()
	pf.wg.Wait()
	if err := removeTree(pf.dir); err != nil {
		return fmt.Errorf("remove staged images: %w", err)
	}
	return nil
}
