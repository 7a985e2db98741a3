package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/zeitwork/zeitwork/internal/webhook"
)

// Deliveries are kept a week: GitHub redelivers only the last three days,
// and the rest is for looking into what GitHub sent.
const (
	webhookPruneEvery = time.Hour
	webhookKeep       = 7 * 24 * time.Hour
)

// pruneWebhooks deletes deliveries older than keep now and then every
// interval, until ctx ends. Every api replica runs it; the deletes are
// idempotent, so they need no coordination.
func pruneWebhooks(ctx context.Context, rc *webhook.Receiver, interval, keep time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := rc.Prune(ctx, time.Now().Add(-keep))
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "pruning webhook deliveries failed", "err", err)
		case n > 0:
			log.InfoContext(ctx, "pruned webhook deliveries", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
