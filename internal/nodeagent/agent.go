package nodeagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/pgnotify"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// Observer is what the node API reads from containerd.
type Observer interface {
	Status(ctx context.Context, id uuid.UUID) (runtime.Status, error)
	List(ctx context.Context) ([]runtime.Status, error)
	Logs(ctx context.Context, id uuid.UUID, follow bool) (io.ReadCloser, error)
}

// Agent runs a node: heartbeats, convergence, the node API and the
// node-proxy.
type Agent struct {
	Pool      *pgxpool.Pool
	Node      node.Node
	Converger *Converger
	Observer  Observer
	Events    func(ctx context.Context) (<-chan runtime.Event, error) // optional: wake on exits
	Token     string                                                  // the node API's credential (CLUSTER_TOKEN)
	// ProxyToken is the node-proxy's (NODE_PROXY_TOKEN): the edges hold
	// it, so it must not open the node API.
	ProxyToken string
	Version    string
	Handler    string // the runtime handler instances run with
	// Dial reaches instances for the node-proxy; nil dials from this
	// process's network namespace, which is the node's in production.
	Dial nodeproxy.Dialer

	PollInterval      time.Duration // the safety net under LISTEN/NOTIFY
	HeartbeatInterval time.Duration
	// Images, when set, has the node's unused images removed every
	// ImageGCInterval once no instance has used them for ImageGCGrace.
	Images                        ImagePruner
	ImageGCInterval, ImageGCGrace time.Duration
	Log                           *slog.Logger

	wake chan struct{}
}

// Wake makes the convergence loop run now.
func (a *Agent) Wake() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run serves api and proxy listeners and converges until ctx ends.
// Stopping the agent never stops instances: containerd's shims own them, and
// the next agent adopts them.
func (a *Agent) Run(ctx context.Context, api, proxy net.Listener) error {
	a.wake = make(chan struct{}, 1)
	if a.Converger.Ready == nil {
		a.Converger.Ready = a.Wake
	}
	// Adopt what already runs before serving: a restarted agent's
	// node-proxy must know its instances from the first request on.
	if _, err := a.Converger.Pass(ctx); err != nil {
		a.Log.WarnContext(ctx, "first convergence pass failed", "err", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.heartbeat(ctx) })
	g.Go(func() error { return a.listen(ctx) })
	g.Go(func() error { return a.converge(ctx) })
	if a.Events != nil {
		g.Go(func() error { return a.watchEvents(ctx) })
	}
	if a.Images != nil && a.ImageGCInterval > 0 {
		g.Go(func() error { return a.pruneImages(ctx) })
	}
	serve := func(l net.Listener, h http.Handler) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		g.Go(func() error { return httpapi.Serve(ctx, srv, l, 5*time.Second) })
	}
	if api != nil {
		serve(api, a.APIHandler())
	}
	if proxy != nil {
		serve(proxy, a.ProxyHandler())
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ProxyHandler is the node-proxy, which admits the edges' token only.
func (a *Agent) ProxyHandler() http.Handler {
	return nodeproxy.New(a.ProxyToken, a.lookup, a.Dial, a.Log)
}

func (a *Agent) lookup(_ context.Context, iid uuid.UUID) (nodeproxy.Target, bool) {
	addr, healthy, ok := a.Converger.Target(iid)
	return nodeproxy.Target{Addr: addr, Healthy: healthy}, ok
}

func (a *Agent) heartbeat(ctx context.Context) error {
	t := time.NewTicker(a.HeartbeatInterval)
	defer t.Stop()
	nodes := node.Store{DB: a.Pool}
	for {
		if _, err := nodes.Heartbeat(ctx, a.Node.ID, observe(ctx, a.Observer)); err != nil && ctx.Err() == nil {
			a.Log.WarnContext(ctx, "heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// listen wakes the convergence loop when the database says this node's
// instances changed, and after every (re)connect for what it may have
// missed. The loop's own timer is the poll underneath.
func (a *Agent) listen(ctx context.Context) error {
	want := a.Node.ID.String()
	l := &pgnotify.Listener{Pool: a.Pool, Channels: []string{"zeitwork_instances"}, Log: a.Log}
	return l.Run(ctx, func(e pgnotify.Event) {
		if e.Missed() || e.Payload == want {
			a.Wake()
		}
	})
}

func (a *Agent) converge(ctx context.Context) error {
	for {
		pending, err := a.Converger.Pass(ctx)
		if err != nil && ctx.Err() == nil {
			a.Log.WarnContext(ctx, "convergence pass failed", "err", err)
		}
		next := a.PollInterval
		if pending > 0 {
			// Something is starting: look again soon, so "healthy" is
			// reported within a fraction of a second of being true.
			next = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.wake:
		case <-time.After(next):
		}
	}
}

// ImagePruner is what the agent needs of internal/runtime to keep the
// node's disk from filling with old deployments' images.
type ImagePruner interface {
	PruneImages(ctx context.Context, grace time.Duration) ([]string, error)
}

func (a *Agent) pruneImages(ctx context.Context) error {
	t := time.NewTicker(a.ImageGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if _, err := a.Images.PruneImages(ctx, a.ImageGCGrace); err != nil && ctx.Err() == nil {
			a.Log.WarnContext(ctx, "image garbage collection", "err", err)
		}
	}
}

func (a *Agent) watchEvents(ctx context.Context) error {
	for ctx.Err() == nil {
		ch, err := a.Events(ctx)
		if err != nil {
			a.Log.WarnContext(ctx, "runtime events", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for range ch {
			a.Wake()
		}
	}
	return ctx.Err()
}

// observe reads what the node has left: memory the kernel says is
// available, the 1-minute load, the instances containerd runs. A value that
// cannot be read is reported as -1 rather than stopping the heartbeat.
func observe(ctx context.Context, o Observer) node.Observation {
	obs := node.Observation{AvailableMemoryMB: -1, LoadMillis: -1, InstancesRunning: -1}
	if kb, err := meminfo("MemAvailable:"); err == nil {
		obs.AvailableMemoryMB = int32(kb / 1024)
	}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				obs.LoadMillis = int32(v * 1000)
			}
		}
	}
	if list, err := o.List(ctx); err == nil {
		obs.InstancesRunning = 0
		for _, s := range list {
			if s.State == runtime.StateRunning {
				obs.InstancesRunning++
			}
		}
	}
	return obs
}
