package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/edge"
)

// edgeCertificates is the edge's ACME-backed TLS (internal/certs).
func edgeCertificates(cfg config.ACME, log *slog.Logger) edge.NewCertificates {
	return func(ctx context.Context, pool *pgxpool.Pool) (edge.Certificates, error) {
		return nil, errors.New("ACME certificates are not wired yet: set EDGE_HTTPS_ADDR= or EDGE_CLOUDFLARE_FRONTED=true")
	}
}
