package cli

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/certs"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/edge"
)

// edgeCertificates is the edge's ACME-backed TLS: certificates and locks in
// Postgres, platform wildcards by DNS-01, custom domains on demand once verified.
func edgeCertificates(cfg config.Edge, log *slog.Logger) edge.NewCertificates {
	if benchCertificates != nil {
		if nc := benchCertificates(); nc != nil {
			return nc
		}
	}
	return func(ctx context.Context, pool *pgxpool.Pool) (edge.Certificates, error) {
		if cfg.CertificateKeys.Keys == nil {
			log.WarnContext(ctx, "CERTIFICATE_KEYS is not set: certificates' private keys are stored in the database unencrypted")
		}
		m, err := certs.New(cfg.ACME, pool, log, certs.Options{HTTPAddr: cfg.HTTPAddr, HTTPSAddr: cfg.HTTPSAddr, PlatformDomains: cfg.Platform.Domains, Keys: cfg.CertificateKeys.Keys})
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, m.Close)
		if err := m.Start(ctx); err != nil {
			m.Close()
			return nil, err
		}
		return m, nil
	}
}

// benchCertificates, set only in binaries built for bench/edge
// (edge_certs_bench.go), may replace the ACME certificates with fixed ones.
var benchCertificates func() edge.NewCertificates
