package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/version"
)

// health answers GET /v1/health for the builder, which otherwise serves
// nothing: 200 once its queue client works and while the database it
// claims builds from answers, 503 before and otherwise. It is how a
// rollout knows that a restarted builder takes builds again (the builder
// has no row of its own to heartbeat in: a build's lease is the only
// trace it leaves, and only while it builds).
type health struct {
	pool      *pgxpool.Pool
	builderID string
	working   atomic.Bool
}

// HealthBody is what GET /v1/health answers.
type HealthBody struct {
	Status    string `json:"status"` // ok, or why not
	Version   string `json:"version"`
	BuilderID string `json:"builder_id"`
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/v1/health" {
		http.NotFound(w, r)
		return
	}
	body, code := HealthBody{Status: "ok", Version: version.Version, BuilderID: h.builderID}, http.StatusOK
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !h.working.Load() {
		body.Status, code = "starting: the queue is not worked yet", http.StatusServiceUnavailable
	} else if err := h.pool.Ping(ctx); err != nil {
		body.Status, code = "the database does not answer", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body) // the client went away: nothing to do
}

// serveHealth listens on addr at once (a taken port fails the start,
// naming the variable) and serves until ctx ends.
func serveHealth(ctx context.Context, addr string, h *health, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("BUILDER_HEALTH_ADDR: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		srv.Close() //nolint:errcheck // shutting down
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.ErrorContext(ctx, "health endpoint stopped", "err", err)
		}
	}()
	log.InfoContext(ctx, "health endpoint", "addr", ln.Addr().String())
	return nil
}
