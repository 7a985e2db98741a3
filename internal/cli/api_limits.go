package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
)

// signInPruneEvery is how often the api deletes expired device sign-ins
// and rate-limit windows that are over.
const signInPruneEvery = time.Hour

// withLimits wires device sign-in and the rate limits into a, all counting
// in the database the api serves from.
func withLimits(a *api.API, limiter *ratelimit.Limiter, cfg config.API) {
	a.Devices = account.Devices{DB: limiter.DB, TTL: cfg.DeviceLogin.TTL, Interval: cfg.DeviceLogin.Interval}
	a.DeviceVerificationURL = cfg.DeviceLogin.VerificationURL
	r := cfg.RateLimits
	a.Limits = api.Limits{Limiter: limiter, SignIn: r.SignIn, Tokens: r.Tokens, DeviceCodes: r.DeviceCodes, DomainChecks: r.DomainChecks, TrustedProxies: r.TrustedProxies}
	if a.Webhook != nil {
		a.Webhook.LimitInstallations(limiter, r.Webhooks)
	}
}

// longestWindow is how long a counter may matter: windows that started
// longer ago than the longest limit's are over.
func longestWindow(r config.RateLimits) time.Duration {
	return max(r.SignIn.Per, r.Tokens.Per, r.DeviceCodes.Per, r.Webhooks.Per, r.DomainChecks.Per, time.Minute)
}

// pruneSignIns deletes expired device sign-ins and finished rate-limit
// windows now and then every interval, until ctx ends. Every api replica
// runs it; the deletes are idempotent, so they need no coordination.
func pruneSignIns(ctx context.Context, d account.Devices, l *ratelimit.Limiter, window, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		now := time.Now()
		for what, prune := range map[string]func() (int64, error){
			"device sign-ins":     func() (int64, error) { return d.Prune(ctx, now) },
			"rate limit counters": func() (int64, error) { return l.Prune(ctx, now.Add(-window)) },
		} {
			n, err := prune()
			switch {
			case err != nil && ctx.Err() == nil:
				log.WarnContext(ctx, "pruning failed", "what", what, "err", err)
			case n > 0:
				log.InfoContext(ctx, "pruned", "what", what, "deleted", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
