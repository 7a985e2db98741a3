package cli

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/sdlisten"
	"github.com/zeitwork/zeitwork/internal/webhook"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func runAPI(ctx context.Context, env Env, _ []string) error {
	cfg, err := config.ParseFrom[config.API](env.vars())
	if err != nil {
		return err
	}
	if cfg.WebDir != "" {
		// A dashboard that is not built is found at start, not by its first visitor.
		if _, err := os.Stat(filepath.Join(cfg.WebDir, "index.html")); err != nil {
			return fmt.Errorf("API_WEB_DIR: no built dashboard (npm run build in packages/web): %w", err)
		}
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "api")
	// The socket systemd holds (bootstrap's zeitwork-api.socket) outlives
	// this process: during a restart, requests wait for the next one.
	inherited, err := sdlisten.Inherit(log)
	if err != nil {
		return err
	}
	defer inherited.Close(ctx)
	return withDatabase(ctx, cfg.Database, func(pool *pgxpool.Pool) error {
		q, err := queue.New(pool, nil, cfg.Queue, log) // enqueues only: builders work the tasks
		if err != nil {
			return err
		}
		l, err := inherited.Listen(ctx, "http", "API_ADDR", cfg.Addr)
		if err != nil {
			return err
		}
		dom, err := domains.New(pool, q, domains.Config{
			EdgeHost: cfg.Platform.EdgeHost, PlatformDomains: cfg.Platform.Reserved(), Resolver: domains.NewResolver(cfg.CustomDomains.DNSResolver),
			CheckInterval: cfg.CustomDomains.CheckInterval, MaxCheckInterval: cfg.CustomDomains.MaxCheckInterval, GiveUpAfter: cfg.CustomDomains.GiveUpAfter,
			RecheckInterval: cfg.CustomDomains.RecheckInterval, RecheckFailures: cfg.CustomDomains.RecheckFailures,
		}, zlog.Component(log, "domains"))
		if err != nil {
			return fmt.Errorf("EDGE_HOST, EDGE_APPS_DOMAIN or EDGE_PLATFORM_DOMAINS: %w", err)
		}
		a := &api.API{
			Accounts:  account.Store{DB: pool, SessionTTL: cfg.SessionTTL},
			Projects:  project.Store{DB: pool},
			Variables: project.Variables{DB: pool, Keys: cfg.Secrets.Keys},
			Domains:   project.Domains{DB: pool, Service: dom},
			Deploys:   api.Deploys{DB: pool, Queue: q, AppsDomain: cfg.Platform.AppsDomain, AppsURL: cfg.Platform.AppsURL},
			Log:       log,
			Dev:       cfg.Dev,
			Logs: api.Logs{Reader: &logs.Reader{Pool: pool, Poll: 2 * time.Second, Log: zlog.Component(log, "logs"),
				Nodes: logs.Nodes{Token: cfg.Cluster.Token.Reveal(), URL: logs.APIPort(cfg.NodeAPIPort)}}},
		}
		if secret := cfg.GitHub.WebhookSecret.Reveal(); secret != "" {
			if a.Webhook, err = webhook.New(pool, q, secret, zlog.Component(log, "webhook")); err != nil {
				return err
			}
			pctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				pruneWebhooks(pctx, a.Webhook, webhookPruneEvery, webhookKeep, log)
			}()
			// Stopped before withDatabase closes the pool under it.
			defer func() { stop(); <-done }()
		}
		if a.App, err = githubApp(cfg.GitHub); err != nil {
			return err
		}
		if g := cfg.GitHub; g.ClientID != "" {
			a.GitHub = &api.GitHubSignIn{ClientID: g.ClientID, ClientSecret: g.ClientSecret.Reveal(), WebURL: g.WebURL, APIURL: g.APIURL}
		}
		{ // device sign-in and rate limits (api_limits.go)
			limiter := &ratelimit.Limiter{DB: pool}
			withLimits(a, limiter, cfg)
			pctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				pruneSignIns(pctx, a.Devices, limiter, longestWindow(cfg.RateLimits), signInPruneEvery, log)
			}()
			defer func() { stop(); <-done }()
		}
		if cfg.S3 != nil {
			if a.Uploads, err = uploadStore(*cfg.S3, cfg.Uploads); err != nil {
				return err
			}
			pctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				pruneUploads(pctx, a.Uploads, uploadPruneEvery, cfg.Uploads.Keep, log)
			}()
			defer func() { stop(); <-done }()
			log.InfoContext(ctx, "uploads served", "bucket", cfg.S3.Bucket, "direct", a.Uploads.Direct(), "max_bytes", cfg.Uploads.MaxBytes)
		}
		handler := a.Handler()
		if cfg.WebDir != "" {
			handler = api.Web(handler, os.DirFS(cfg.WebDir))
			log.InfoContext(ctx, "dashboard served", "dir", cfg.WebDir, "url", "/")
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		log.InfoContext(ctx, "api running", "addr", l.Addr().String(), "openapi", api.OpenAPIPath)
		return httpapi.Serve(ctx, srv, l, 10*time.Second)
	})
}
