package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// runDev runs the platform on this machine. scripts/dev starts the
// dependencies (scripts/deps.sh up) and then this; here we check that every
// dependency really serves, migrate, and stay up watching them. The roles
// join this command as their issues land.
func runDev(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := fs.Bool("check", false, "check dependencies and migrate, then exit")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (flags: --check)", err)}
	}
	cfg, err := config.ParseFrom[config.Dev](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel}), "dev")

	deps := devenv.Dependencies(cfg)
	var down []string
	for _, d := range deps {
		if err := d.Probe(ctx); err != nil {
			down = append(down, fmt.Sprintf("%s at %s: %v", d.Name, d.Endpoint, err))
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("dependencies not serving (start them with scripts/deps.sh up):\n  %s", strings.Join(down, "\n  "))
	}
	res, err := migrate(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	w := env.Stdout
	fmt.Fprintln(w, "Zeitwork dev: dependencies healthy, database migrated")
	for _, d := range deps {
		fmt.Fprintf(w, "  %-11s %s\n", d.Name, d.Endpoint)
	}
	fmt.Fprintf(w, "  migrations  %d applied now, %d already\n", len(res.Applied), res.Skipped)
	fmt.Fprintln(w, "Roles (api, operator, nodeagent, builder, edge) are not built yet; they join `zeitwork dev` as their issues land.")
	if *check {
		return nil
	}
	fmt.Fprintln(w, "Watching dependencies; Ctrl-C to stop (the dependencies keep running: scripts/deps.sh down stops them).")
	watch(ctx, deps, log)
	return nil
}

// watch re-probes the dependencies until ctx ends and logs every change, so
// a crashed MinIO shows up here rather than as a mysterious test failure.
func watch(ctx context.Context, deps []devenv.Dependency, log *slog.Logger) {
	healthy := make([]bool, len(deps))
	for i := range healthy {
		healthy[i] = true
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, d := range deps {
			err := d.Probe(ctx)
			switch {
			case err != nil && healthy[i]:
				log.ErrorContext(ctx, "dependency down", "dependency", d.Name, "endpoint", d.Endpoint, "err", err)
			case err == nil && !healthy[i]:
				log.InfoContext(ctx, "dependency back", "dependency", d.Name)
			}
			healthy[i] = err == nil
		}
	}
}
