package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// startOperator runs `zeitwork operator` until ctx ends: the operator's
// loops and, on cfg.Addr, the management API over the same pool.
func startOperator(ctx context.Context, cfg config.Operator, log *slog.Logger) error {
	tokens := registryTokens(cfg)
	pool, err := openDatabase(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	if tokens != nil {
		// A node's registry token pulls what is placed on it, as it is
		// when the token is asked for.
		tokens.NodeProjects = node.Store{DB: pool}.Projects
	}
	// Listen first: an operator that cannot serve its API starts no queue.
	if cfg.Addr, err = management.ListenAddr(cfg.Addr); err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("OPERATOR_ADDR %s: %w", cfg.Addr, err)
	}
	op, err := operator.Start(ctx, cfg, pool, operator.SchedulerPlacer(cfg.NodeHeartbeatDeadline), version.Version, log)
	if err != nil {
		l.Close()
		return err
	}
	api := &management.API{
		Pool: pool, Queue: op.Queue, Token: cfg.Management.Token.Reveal(), Log: zlog.Component(op.Log, "management"), RegistryTokens: tokens,
		Cluster: op.Lifecycle, Domains: op.Domains, Secrets: cfg.Secrets.Keys,
		Images: image.Store{Pool: pool, Registry: image.Registry{Insecure: cfg.Registry.Insecure, Username: cfg.Registry.Username, Password: cfg.Registry.Password.Reveal()}},
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	op.Log.InfoContext(ctx, "operator running", "management_api", l.Addr().String(), "registry_tokens", tokens != nil)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return op.Run(ctx) })
	g.Go(func() error { return httpapi.Serve(ctx, srv, l, 10*time.Second) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// registryTokens is the registry's token service, or nil when
// REGISTRY_TOKEN_KEY is unset (config checked it comes with its secret).
func registryTokens(cfg config.Operator) *registryauth.Service {
	if !cfg.RegistryTokenKey.Set() {
		return nil
	}
	return &registryauth.Service{Name: "zeitwork-registry", Issuer: "zeitwork", Key: cfg.RegistryTokenKey.Key(), Secret: []byte(cfg.RegistryAuth.CredentialSecret.Reveal()), TTL: 5 * time.Minute}
}
