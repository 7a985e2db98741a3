package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/cli/version"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// runDev runs the platform on this machine. scripts/dev starts the
// dependencies (scripts/deps.sh up) and then this; here we check that every
// dependency really serves, migrate, and run the roles that exist: the
// builder and DEV_NODES simulated workers (node agents, each with a network
// namespace as its node), the operator and the edge. The API joins when it lands.
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
	root := zlog.New(env.Stderr, zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel})
	log := zlog.Component(root, "dev")

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
	if *check {
		fmt.Fprintln(w, "Roles not started (--check). Not built yet: api.")
		return nil
	}
	secrets, err := devenv.LoadSecrets(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("dev secrets: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return builder.Main(ctx, devBuilder(cfg), handOnToOperator, zlog.Component(root, "builder"))
	})
	fmt.Fprintf(w, "  builder     working build tasks on %s\n", cfg.BuildkitAddr)
	ocfg := devOperator(cfg, secrets)
	g.Go(func() error {
		return startOperator(ctx, ocfg, zlog.Component(root, "operator"))
	})
	fmt.Fprintf(w, "  operator    management API http://%s\n", ocfg.Addr)
	ecfg := devEdge(cfg, secrets)
	g.Go(func() error { return edge.Main(ctx, ecfg, nil, zlog.Component(root, "edge")) })
	fmt.Fprintf(w, "  edge        http://<project>.%s:%s (metrics http://%s/metrics)\n", ecfg.AppsDomain, portOf(ecfg.HTTPAddr), ecfg.MetricsAddr)
	for i := 1; i <= cfg.Nodes; i++ {
		ncfg, err := devNode(cfg, secrets, i)
		if err != nil {
			return err
		}
		g.Go(func() error {
			return nodeagent.Main(ctx, ncfg, version.Version, zlog.Component(root, fmt.Sprintf("node%d", i)))
		})
		fmt.Fprintf(w, "  node%d       api http://%s, node-proxy %s, netns %s\n", i, ncfg.APIAddr, ncfg.ProxyAddr, ncfg.NodeNetns)
	}
	fmt.Fprintf(w, "  secrets     %s (cluster token for the node APIs, key for variables)\n", filepath.Join(cfg.StateDir, "secrets.env"))
	fmt.Fprintln(w, "Not built yet: api. Ctrl-C stops the roles; instances and dependencies keep running (scripts/deps.sh down).")
	g.Go(func() error { watch(ctx, deps, log); return nil })
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func devOperator(cfg config.Dev, s devenv.Secrets) config.Operator {
	return config.Operator{
		Log:          zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel},
		Database:     config.Database{URL: cfg.DatabaseURL, MaxConns: 10},
		Queue:        config.Queue{Workers: 10, JobTimeout: time.Minute, RescueAfter: 5 * time.Minute},
		Addr:         fmt.Sprintf("127.0.0.1:%d", cfg.PortBase-19), // 28081 by default
		ClusterToken: config.Secret(s.ClusterToken), RegistryInsecure: true,
		RetireGrace: cfg.RetireGrace, HealthyDeadline: 2 * time.Minute, NodeHeartbeatDeadline: cfg.HeartbeatDeadline,
		// Custom domains point at the dev edge's name; the dev apps domain is the platform's own.
		EdgeHost: "edge." + cfg.AppsDomain, AppsDomain: cfg.AppsDomain,
	}
}

// devEdge serves plain HTTP on loopback: browsers resolve *.localhost to
// this machine, so http://<project>.zeitwork.localhost:28082 just works.
func devEdge(cfg config.Dev, s devenv.Secrets) config.Edge {
	return config.Edge{
		Log:               zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel},
		Database:          config.Database{URL: cfg.DatabaseURL, MaxConns: 4},
		HTTPAddr:          fmt.Sprintf("127.0.0.1:%d", cfg.PortBase-18),
		MetricsAddr:       fmt.Sprintf("127.0.0.1:%d", cfg.PortBase-17),
		AppsDomain:        cfg.AppsDomain,
		Host:              "edge." + cfg.AppsDomain,
		ClusterToken:      config.Secret(s.ClusterToken),
		SnapshotPath:      filepath.Join(cfg.StateDir, "edge-routes.json"),
		PollInterval:      5 * time.Second,
		UpstreamTimeout:   time.Minute,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func devBuilder(cfg config.Dev) config.Builder {
	return config.Builder{
		Log:          zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel},
		Database:     config.Database{URL: cfg.DatabaseURL, MaxConns: 10},
		Queue:        config.Queue{Workers: 2, JobTimeout: 20 * time.Minute, RescueAfter: 30 * time.Minute},
		S3:           config.S3{Endpoint: cfg.S3Endpoint, Region: "us-east-1", Bucket: cfg.S3Bucket, AccessKeyID: cfg.S3AccessKey, SecretAccessKey: cfg.S3SecretKey},
		BuilderID:    "dev-builder",
		BuildkitAddr: cfg.BuildkitAddr, RegistryAddr: cfg.RegistryAddr, RegistryInsecure: true,
		BaseImageMirror: "docker.io", BuildTimeout: 15 * time.Minute, BuildLease: 30 * time.Second,
	}
}

func devNode(cfg config.Dev, s devenv.Secrets, i int) (config.NodeAgent, error) {
	name := fmt.Sprintf("%s%d", cfg.NetnsPrefix, i)
	ns, err := devenv.EnsureNetns(name)
	if err != nil {
		return config.NodeAgent{}, fmt.Errorf("simulated node %d needs a network namespace (run as root): %w", i, err)
	}
	proxy := fmt.Sprintf("127.0.0.1:%d", cfg.PortBase+100+i)
	return config.NodeAgent{
		Log:             zlog.Config{Format: cfg.LogFormat, Level: cfg.LogLevel},
		Database:        config.Database{URL: cfg.DatabaseURL, MaxConns: 5},
		InternalAddress: proxy, Region: "dev", StateDir: filepath.Join(cfg.StateDir, name),
		CPUMillis: 2000, MemoryMB: 4096,
		ClusterPrefix: network.DefaultCluster, ClusterToken: config.Secret(s.ClusterToken),
		APIAddr: fmt.Sprintf("127.0.0.1:%d", cfg.PortBase+i), ProxyAddr: proxy, NodeNetns: ns,
		ContainerdAddr: cfg.Containerd, Namespace: fmt.Sprintf("zeitwork-node%d", i), RuntimeHandler: "io.containerd.runc.v2",
		LogDir: filepath.Join(cfg.StateDir, name, "logs"), PlainHTTP: []string{cfg.RegistryAddr}, SecretsKeys: s.SecretsKeys,
		PollInterval: 5 * time.Second, HeartbeatInterval: min(5*time.Second, cfg.HeartbeatDeadline/3),
	}, nil
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
