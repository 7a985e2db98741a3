package cli

import (
	"context"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func runNodeAgent(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.NodeAgent](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "nodeagent")
	return nodeagent.Main(ctx, cfg, log)
}

func runBuilder(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.Builder](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "builder")
	return builder.Main(ctx, cfg, log)
}
