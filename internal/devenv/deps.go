// Package devenv knows the local platform's dependencies — Postgres, MinIO,
// the registry, buildkitd, containerd — where scripts/deps.sh starts them
// (deploy/dev/deps.env, read by both), and probes whether each one is
// really serving. `zeitwork dev` and the tests' testenv both ask it. It
// also keeps what a dev platform owns on the host: its secrets, its GitHub
// App, its roles' database users and the simulated nodes' network
// namespaces, all named after the platform's prefix.
package devenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/config"
)

// Dependency is one local service.
type Dependency struct {
	Name     string
	Endpoint string
	probe    func(ctx context.Context) error
}

// Probe checks the dependency once.
func (d Dependency) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return d.probe(ctx)
}

// Dependencies lists what `zeitwork dev` needs, at the endpoints in cfg.
func Dependencies(cfg config.Dev) []Dependency {
	return []Dependency{
		{"postgres", cfg.Database.URL.String(), func(ctx context.Context) error { return Postgres(ctx, cfg.Database.URL.Reveal()) }},
		{"minio", cfg.S3.Endpoint, func(ctx context.Context) error { return MinIO(ctx, cfg.S3.Endpoint) }},
		{"registry", cfg.Registry.Addr, func(ctx context.Context) error { return Registry(ctx, cfg.Registry.Addr) }},
		{"buildkitd", cfg.Buildkit.Addr, func(ctx context.Context) error { return Dial(ctx, cfg.Buildkit.Addr) }},
		{"containerd", cfg.Containerd.Addr, func(ctx context.Context) error { return Dial(ctx, "unix://"+cfg.Containerd.Addr) }},
	}
}

// MinIO checks that the MinIO at endpoint (http://host:port) is live.
func MinIO(ctx context.Context, endpoint string) error {
	return HTTPOK(ctx, endpoint+deps["MINIO_HEALTH_PATH"])
}

// Registry checks that the registry at addr (host:port, plain HTTP)
// answers the distribution API.
func Registry(ctx context.Context, addr string) error {
	return HTTPOK(ctx, "http://"+addr+deps["REGISTRY_HEALTH_PATH"])
}

// Postgres checks that url accepts a connection and a query.
func Postgres(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// HTTPOK checks that GET url answers 200.
func HTTPOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// Dial checks that a unix:// or tcp:// address (bare host:port is tcp)
// accepts connections.
func Dial(ctx context.Context, addr string) error {
	network, address, ok := strings.Cut(addr, "://")
	if !ok {
		network, address = "tcp", addr
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return err
	}
	return c.Close()
}
