//go:build edgepprof

package cli

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/edge"
)

// Only in binaries built with -tags edgepprof (bench/edge/run.sh builds
// one): EDGE_BENCH_TLS_CERT and EDGE_BENCH_TLS_KEY, two PEM files, make the
// edge serve that one certificate instead of asking an ACME CA, so that
// the benchmark can measure HTTPS through the edge against nginx with the
// same certificate. Production builds never contain it.
func init() {
	benchCertificates = func() edge.NewCertificates {
		certFile, keyFile := os.Getenv("EDGE_BENCH_TLS_CERT"), os.Getenv("EDGE_BENCH_TLS_KEY")
		if certFile == "" || keyFile == "" {
			return nil
		}
		return func(context.Context, *pgxpool.Pool) (edge.Certificates, error) {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, err
			}
			return fixedCertificates{cert}, nil
		}
	}
}

type fixedCertificates struct{ cert tls.Certificate }

func (f fixedCertificates) TLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{f.cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
}

func (fixedCertificates) HTTPChallenge(next http.Handler) http.Handler { return next }
