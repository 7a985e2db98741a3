package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Main runs `zeitwork operator` until ctx ends. Any number run at once:
// deploy tasks are shared through the queue, and the periodic sweeps are
// safe to run on every operator (their writes are guarded by status).
func Main(ctx context.Context, cfg config.Operator, place Placer, log *slog.Logger) error {
	tokens := registryTokens(cfg)
	pool, err := pgxpool.New(ctx, cfg.Database.URL.Reveal())
	if err != nil {
		return fmt.Errorf("database %s: %w", cfg.Database.URL, err)
	}
	defer pool.Close()

	host, _ := os.Hostname()
	self, err := db.New(pool).OperatorRegister(ctx, db.OperatorRegisterParams{ID: id.New(), Hostname: host, Address: cfg.Addr, Version: version.Version})
	if err != nil {
		return fmt.Errorf("register operator: %w", err)
	}
	log = log.With("operator_id", self.ID)

	policy := DefaultPolicy
	policy.RetireGrace, policy.HealthyDeadline, policy.HeartbeatDeadline = cfg.RetireGrace, cfg.HealthyDeadline, cfg.NodeHeartbeatDeadline
	lc := &Lifecycle{Pool: pool, Place: place, Policy: policy, Log: zlog.Component(log, "lifecycle")}
	workers := queue.NewWorkers(Queue, domains.Queue)
	queue.Register(workers, &DeployWorker{Lifecycle: lc})
	verify := &domains.VerifyWorker{}
	queue.Register(workers, verify)
	q, err := queue.New(pool, workers, cfg.Queue, log)
	if err != nil {
		return err
	}
	dom, err := domains.New(pool, q, domains.Config{
		EdgeHost: cfg.Platform.EdgeHost, PlatformDomains: cfg.Platform.Reserved(), Resolver: domains.NewResolver(cfg.CustomDomains.DNSResolver),
		CheckInterval: cfg.CustomDomains.CheckInterval, MaxCheckInterval: cfg.CustomDomains.MaxCheckInterval, GiveUpAfter: cfg.CustomDomains.GiveUpAfter,
	}, zlog.Component(log, "domains"))
	if err != nil {
		return fmt.Errorf("EDGE_HOST, EDGE_APPS_DOMAIN or EDGE_PLATFORM_DOMAINS: %w", err)
	}
	verify.Domains = dom
	if err := q.Start(ctx); err != nil {
		return fmt.Errorf("start queue: %w", err)
	}

	api := &management.API{
		Pool: pool, Queue: q, Token: cfg.Cluster.Token.Reveal(), Log: zlog.Component(log, "management"), RegistryTokens: tokens,
		Cluster: &management.Cluster{
			AddInstance: func(r *http.Request, dep uuid.UUID, node *uuid.UUID) (db.Instance, error) {
				return lc.AddInstance(r.Context(), dep, node)
			},
			SetNodeStatus: func(r *http.Request, node uuid.UUID, status string) (db.Node, error) {
				return lc.SetNodeStatus(r.Context(), node, status)
			},
			ErrCannotPlace: ErrCannotPlace,
		},
		Domains: dom,
		Images:  image.Store{Pool: pool, Registry: image.Registry{Insecure: cfg.Registry.Insecure, Username: cfg.Registry.Username, Password: cfg.Registry.Password.Reveal()}},
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("OPERATOR_ADDR %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.InfoContext(ctx, "operator running", "management_api", l.Addr().String(), "registry_tokens", tokens != nil)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return q.Stop(sctx)
	})
	g.Go(func() error { return every(ctx, 5*time.Second, func() { heartbeat(ctx, pool, self.ID, log) }) })
	g.Go(func() error {
		return every(ctx, 5*time.Second, func() {
			if _, err := lc.Retire(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "retire", "err", err)
			}
			if err := lc.Heal(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "heal", "err", err)
			}
		})
	})
	g.Go(func() error { return every(ctx, 30*time.Second, func() { sweep(ctx, pool, q, log) }) })
	g.Go(func() error {
		return every(ctx, dom.CheckInterval(), func() {
			if _, err := dom.Sweep(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "domain sweep", "err", err)
			}
		})
	})
	err = g.Wait()
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

func heartbeat(ctx context.Context, pool *pgxpool.Pool, self [16]byte, log *slog.Logger) {
	if _, err := db.New(pool).OperatorHeartbeat(ctx, self); err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "operator heartbeat", "err", err)
	}
}

// sweep gives every deploying deployment a deploy task, in case one was
// lost (the builder enqueues it with the build's result, but a deployment
// made before any operator ran, or rolled back by hand, may have none).
// The task is unique per deployment, so this never doubles work.
func sweep(ctx context.Context, pool *pgxpool.Pool, q *queue.Queue, log *slog.Logger) {
	deps, err := db.New(pool).DeploymentListByStatus(ctx, db.DeploymentListByStatusParams{Status: "deploying", MaxRows: 500})
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "sweep", "err", err)
		}
		return
	}
	for _, d := range deps {
		if _, err := q.Enqueue(ctx, DeployTask{DeploymentID: d.ID}); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "sweep enqueue", "deployment_id", d.ID, "err", err)
		}
	}
}

// registryTokens is the registry's token service, or nil when
// REGISTRY_TOKEN_KEY is unset (config checked it comes with its secret).
func registryTokens(cfg config.Operator) *registryauth.Service {
	if !cfg.RegistryTokenKey.Set() {
		return nil
	}
	return &registryauth.Service{Name: "zeitwork-registry", Issuer: "zeitwork", Key: cfg.RegistryTokenKey.Key(), Secret: []byte(cfg.RegistryAuth.CredentialSecret.Reveal()), TTL: 5 * time.Minute}
}
