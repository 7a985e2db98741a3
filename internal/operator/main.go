package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Operator is one running `zeitwork operator`: its registration, its task
// queue and the services its loops drive. Any number run at once: deploy
// tasks are shared through the queue, and the periodic sweeps are safe to
// run on every operator (their writes are guarded by status).
type Operator struct {
	ID        uuid.UUID
	Pool      *pgxpool.Pool
	Queue     *queue.Queue
	Lifecycle *Lifecycle
	Domains   *domains.Service
	Log       *slog.Logger

	nodeViewRefresh time.Duration
}

// Start registers the operator and starts working its task queue; Run then
// runs its periodic loops. version is the binary's, recorded with the
// registration.
func Start(ctx context.Context, cfg config.Operator, pool *pgxpool.Pool, place Placer, version string, log *slog.Logger) (*Operator, error) {
	host, _ := os.Hostname()
	self, err := db.New(pool).OperatorRegister(ctx, db.OperatorRegisterParams{ID: id.New(), Hostname: host, Address: cfg.Addr, Version: version})
	if err != nil {
		return nil, fmt.Errorf("register operator: %w", err)
	}
	log = log.With("operator_id", self.ID)

	policy := DefaultPolicy
	policy.RetireGrace, policy.HealthyDeadline, policy.HeartbeatDeadline = cfg.RetireGrace, cfg.HealthyDeadline, cfg.NodeHeartbeatDeadline
	policy.PullDeadline = cfg.PullDeadline
	lc := &Lifecycle{Pool: pool, Place: place, Policy: policy, Log: zlog.Component(log, "lifecycle"), Wakeups: &Wakeups{}}
	if cfg.NodeViewRefresh > 0 {
		lc.Nodes = &node.View{Store: node.Store{DB: pool}, Log: zlog.Component(log, "nodeview")}
	}
	workers := queue.NewWorkers(Queue, domains.Queue)
	queue.Register(workers, &DeployWorker{Lifecycle: lc})
	rollback := &RollbackWorker{Lifecycle: lc}
	queue.Register(workers, rollback)
	verify := &domains.VerifyWorker{}
	queue.Register(workers, verify)
	q, err := queue.New(pool, workers, cfg.Queue, log)
	if err != nil {
		return nil, err
	}
	dom, err := domains.New(pool, q, domains.Config{
		EdgeHost: cfg.Platform.EdgeHost, PlatformDomains: cfg.Platform.Reserved(), Resolver: domains.NewResolver(cfg.CustomDomains.DNSResolver),
		CheckInterval: cfg.CustomDomains.CheckInterval, MaxCheckInterval: cfg.CustomDomains.MaxCheckInterval, GiveUpAfter: cfg.CustomDomains.GiveUpAfter,
		RecheckInterval: cfg.CustomDomains.RecheckInterval, RecheckFailures: cfg.CustomDomains.RecheckFailures,
	}, zlog.Component(log, "domains"))
	if err != nil {
		return nil, fmt.Errorf("EDGE_HOST, EDGE_APPS_DOMAIN or EDGE_PLATFORM_DOMAINS: %w", err)
	}
	verify.Domains = dom
	rollback.Queue = q
	if err := q.Start(ctx); err != nil {
		return nil, fmt.Errorf("start queue: %w", err)
	}
	return &Operator{ID: self.ID, Pool: pool, Queue: q, Lifecycle: lc, Domains: dom, Log: log, nodeViewRefresh: cfg.NodeViewRefresh}, nil
}

// Run runs the operator's loops until ctx ends, then stops its queue.
func (o *Operator) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return o.Queue.Stop(sctx)
	})
	g.Go(func() error { return every(ctx, 5*time.Second, func() { o.heartbeat(ctx) }) })
	if o.Lifecycle.Wakeups != nil {
		g.Go(func() error { return o.Lifecycle.Wakeups.Run(ctx, o.Pool, zlog.Component(o.Log, "wakeups")) })
	}
	if o.Lifecycle.Nodes != nil {
		g.Go(func() error { o.Lifecycle.Nodes.Run(ctx, o.nodeViewRefresh); return nil })
	}
	g.Go(func() error {
		return every(ctx, 5*time.Second, func() {
			if _, err := o.Lifecycle.Retire(ctx); err != nil && ctx.Err() == nil {
				o.Log.WarnContext(ctx, "retire", "err", err)
			}
			if err := o.Lifecycle.Heal(ctx); err != nil && ctx.Err() == nil {
				o.Log.WarnContext(ctx, "heal", "err", err)
			}
		})
	})
	g.Go(func() error { return every(ctx, 30*time.Second, func() { o.sweep(ctx) }) })
	g.Go(func() error {
		return every(ctx, o.Domains.CheckInterval(), func() {
			if _, err := o.Domains.Sweep(ctx); err != nil && ctx.Err() == nil {
				o.Log.WarnContext(ctx, "domain sweep", "err", err)
			}
		})
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func every(ctx context.Context, d time.Duration, fn func()) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (o *Operator) heartbeat(ctx context.Context) {
	if _, err := db.New(o.Pool).OperatorHeartbeat(ctx, o.ID); err != nil && ctx.Err() == nil {
		o.Log.WarnContext(ctx, "operator heartbeat", "err", err)
	}
}

// sweep gives every deploying deployment a deploy task, in case one was
// lost (the builder enqueues it with the build's result, but a deployment
// made before any operator ran, or rolled back by hand, may have none).
// The task is unique per deployment, so this never doubles work.
func (o *Operator) sweep(ctx context.Context) {
	deps, err := deployment.Store{DB: o.Pool}.ListByStatus(ctx, deployment.StatusDeploying, 500)
	if err != nil {
		if ctx.Err() == nil {
			o.Log.WarnContext(ctx, "sweep", "err", err)
		}
		return
	}
	for _, d := range deps {
		if _, err := o.Queue.Enqueue(ctx, DeployTask{DeploymentID: d.ID}); err != nil && ctx.Err() == nil {
			o.Log.WarnContext(ctx, "sweep enqueue", "deployment_id", d.ID, "err", err)
		}
	}
}
