package cli

import (
	"context"
	"runtime/debug"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/builder"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func runNodeAgent(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.NodeAgent](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "nodeagent")
	return withDatabase(ctx, cfg.Database, func(pool *pgxpool.Pool) error {
		return nodeagent.Main(ctx, cfg, pool, version.Version, log)
	})
}

func runBuilder(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.Builder](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "builder")
	return withDatabase(ctx, cfg.Database, func(pool *pgxpool.Pool) error {
		return builder.Main(ctx, cfg, pool, handOnToOperator, log)
	})
}

// handOnToOperator enqueues the deploy task of a freshly built deployment,
// in the transaction that records the build.
func handOnToOperator(ctx context.Context, tx pgx.Tx, d db.Deployment, _ db.Image) error {
	return queue.EnqueueFromWorkerTx(ctx, tx, operator.DeployTask{DeploymentID: d.ID})
}

func runOperator(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.Operator](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "operator")
	return startOperator(ctx, cfg, log)
}

func runEdge(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.Edge](env.vars())
	if err != nil {
		return err
	}
	root := zlog.New(env.Stderr, cfg.Log)
	// The edge allocates per request and keeps little: collecting less
	// often cut its CPU per request by a third in bench/edge (190 → 123 µs).
	// A soft limit brings collection back to normal once the heap is big
	// (a route table of 100,000 projects), instead of letting it grow 5×.
	// GOGC and GOMEMLIMIT, when set, decide instead.
	vars := env.vars()
	if _, set := vars["GOGC"]; !set {
		debug.SetGCPercent(400)
	}
	if _, set := vars["GOMEMLIMIT"]; !set {
		debug.SetMemoryLimit(768 << 20)
	}
	var newCerts edge.NewCertificates
	if cfg.TLS() {
		newCerts = edgeCertificates(cfg, zlog.Component(root, "certs"))
	}
	return withDatabase(ctx, cfg.Database, func(pool *pgxpool.Pool) error {
		return edge.Main(ctx, cfg, pool, newCerts, zlog.Component(root, "edge"))
	})
}
