package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// runDev runs the platform on this machine. scripts/dev starts the
// dependencies (scripts/deps.sh up) and then this; here we check that every
// dependency really serves, migrate, and run the roles: the public API, the
// operator, the edge, the builder and DEV_NODES simulated workers (node
// agents, each with a network namespace as its node), with a GitHub
// emulator standing in for GitHub. Unless --bare, it then signs the CLI
// in as the emulator's dev user and makes examples/hello serve (welcome).
//
// Every role parses its own configuration, as it would in production, from
// the caller's variables over the local dependencies' endpoints and dev's
// defaults, plus what dev must decide itself: addresses, secrets, and the
// names of what this platform owns on the host.
func runDev(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := fs.Bool("check", false, "check dependencies and migrate, then exit")
	bare := fs.Bool("bare", false, "run the platform only: no CLI login, no examples/hello")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (flags: --check, --bare)", err)}
	}
	vars := devVars(env.vars())
	cfg, err := config.ParseFrom[config.Dev](vars)
	if err != nil {
		return err
	}
	root := zlog.New(env.Stderr, cfg.Log)
	log := zlog.Component(root, "dev")
	prog := newProgress(env.Stdout, env.vars())

	deps := devenv.Dependencies(cfg)
	names := make([]string, len(deps))
	for i, d := range deps {
		names[i] = d.Name
	}
	prog.start("dependencies", "probing "+strings.Join(names, ", "))
	var down []string
	for _, d := range deps {
		if err := d.Probe(ctx); err != nil {
			down = append(down, fmt.Sprintf("%s at %s: %v", d.Name, d.Endpoint, err))
		}
	}
	if len(down) > 0 {
		err := fmt.Errorf("dependencies not serving (start them with scripts/deps.sh up):\n  %s", strings.Join(down, "\n  "))
		prog.fail("dependencies", fmt.Errorf("%d of %d not serving", len(down), len(deps)))
		return err
	}
	prog.done("dependencies", strings.Join(names, ", ")+" serving")
	prog.start("database", "migrating")
	res, err := migrate(ctx, cfg.Database.URL, log)
	if err != nil {
		prog.fail("database", err)
		return fmt.Errorf("migrate: %w", err)
	}
	prog.done("database", fmt.Sprintf("migrated: %d applied now, %d already", len(res.Applied), res.Skipped))

	// The summary is printed once everything has started, so that it is the
	// last thing on the screen, and printed whole.
	sum := &strings.Builder{}
	for _, d := range deps {
		fmt.Fprintf(sum, "  %-11s %s\n", d.Name, d.Endpoint)
	}
	fmt.Fprintf(sum, "  migrations  %d applied now, %d already\n", len(res.Applied), res.Skipped)
	w := env.Stdout
	if *check {
		fmt.Fprintln(w, prog.title("Zeitwork dev: dependencies healthy, database migrated"))
		fmt.Fprint(w, sum.String())
		fmt.Fprintln(w, "Roles not started (--check).")
		return nil
	}
	prog.start("roles", "starting")
	state := cfg.State()
	secrets, err := devenv.LoadSecrets(state)
	if err != nil {
		prog.fail("roles", err)
		return fmt.Errorf("dev secrets: %w", err)
	}
	vars["CLUSTER_TOKEN"], vars["SECRETS_KEYS"] = secrets.ClusterToken, secrets.SecretsKeys
	vars["NODE_PROXY_TOKEN"], vars["MANAGEMENT_TOKEN"] = secrets.NodeProxyToken, secrets.ManagementToken
	var dbURLs map[dbrole.Role]string
	if cfg.DatabaseRoles {
		dbURLs, err = devenv.RoleUsers(ctx, cfg.Database.URL.Reveal(), string(cfg.Prefix), secrets.DatabasePassword)
		if err != nil {
			prog.fail("roles", err)
			return fmt.Errorf("database users of the roles (DEV_DATABASE_ROLES=false runs every role as DATABASE_URL's user): %w", err)
		}
	}
	app, err := devenv.LoadGitHubApp(state)
	if err != nil {
		prog.fail("roles", err)
		return fmt.Errorf("dev GitHub App: %w", err)
	}
	gh := newDevGitHub(cfg, app)
	maps.Copy(vars, gh.vars)
	roles, err := devRoles(cfg, vars, dbURLs)
	if err != nil {
		prog.fail("roles", err)
		return err
	}
	emu, err := gh.listen(cfg, app, roles.api.Addr, zlog.Component(root, "github"))
	if err != nil {
		prog.fail("roles", err)
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return runAPI(ctx, Env{Environ: environ(roles.apiVars), Stdout: io.Discard, Stderr: env.Stderr}, nil)
	})
	apiURL := devAPIURL(roles.api.Addr)
	fmt.Fprintf(sum, "  api         %s/v1 (OpenAPI %s/v1/openapi.json)\n", apiURL, apiURL)
	g.Go(func() error { return emu.Run(ctx) })
	fmt.Fprintf(sum, "  github      emulator %s (codeload %s), signed in as %q\n", emu.URL, emu.CodeloadURL, githubemu.DevLogin)
	fmt.Fprintf(sum, "  repos       git push into %s/<name>.git delivers the push to the api\n", emu.ReposDir())
	g.Go(func() error {
		return withDatabase(ctx, roles.builder.Database, func(pool *pgxpool.Pool) error {
			return builder.Main(ctx, roles.builder, pool, handOnToOperator, zlog.Component(root, "builder"))
		})
	})
	fmt.Fprintf(sum, "  builder     working build tasks on %s\n", roles.builder.Buildkit.Addr)
	ocfg := roles.operator
	g.Go(func() error {
		return startOperator(ctx, ocfg, zlog.Component(root, "operator"))
	})
	fmt.Fprintf(sum, "  operator    management API http://%s\n", ocfg.Addr)
	ecfg := roles.edge
	g.Go(func() error {
		return withDatabase(ctx, ecfg.Database, func(pool *pgxpool.Pool) error {
			return edge.Main(ctx, ecfg, pool, nil, zlog.Component(root, "edge"))
		})
	})
	fmt.Fprintf(sum, "  edge        http://<project>.%s:%s (metrics http://%s/metrics)\n", ecfg.Platform.AppsDomain, portOf(ecfg.HTTPAddr), ecfg.MetricsAddr)
	for i, ncfg := range roles.nodes {
		name := fmt.Sprintf("node%d", i+1)
		g.Go(func() error {
			return withDatabase(ctx, ncfg.Database, func(pool *pgxpool.Pool) error {
				return nodeagent.Main(ctx, ncfg, pool, version.Version, zlog.Component(root, name))
			})
		})
		fmt.Fprintf(sum, "  %-11s api http://%s, node-proxy %s, netns %s\n", name, ncfg.APIAddr, ncfg.ProxyAddr, ncfg.NodeNetns)
	}
	fmt.Fprintf(sum, "  secrets     %s (tokens of the node APIs, node-proxies and management API, key for variables, database password), github-app.env and .pem beside it\n", filepath.Join(state, "secrets.env"))
	if dbURLs != nil {
		fmt.Fprintf(sum, "  db users    %s_<role> for api, operator, builder, nodeagent, edge (each with its role's grants only)\n", cfg.Prefix)
	}
	g.Go(func() error { watch(ctx, deps, log); return nil })

	stop := func() error {
		if err := g.Wait(); err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	}
	started := fmt.Sprintf("api, GitHub emulator, builder, operator, edge and %d simulated node", len(roles.nodes))
	if len(roles.nodes) != 1 {
		started += "s"
	}
	cliLine := ""
	if *bare {
		// Nothing waits for the api: the summary comes at once.
		prog.done("roles", started)
	} else if err := waitHealthy(ctx, "http://"+roles.api.Addr+"/v1/health", time.Minute); err != nil {
		if ctx.Err() != nil {
			return stop() // a role failed, or Ctrl-C
		}
		prog.fail("roles", err)
		log.ErrorContext(ctx, "the api does not serve", "err", err)
	} else {
		prog.done("roles", started)
		var helloURL string
		helloURL, cliLine = welcome(ctx, cfg, env, roles.api.Addr, prog, log)
		if ctx.Err() != nil {
			return stop()
		}
		if helloURL != "" {
			fmt.Fprintf(sum, "  hello       %s (examples/hello)\n", helloURL)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, prog.title("Zeitwork dev is running"))
	fmt.Fprint(w, sum.String())
	if roles.api.WebDir != "" {
		fmt.Fprintf(w, "Dashboard: %s/\n", apiURL)
		fmt.Fprintf(w, "Sign in: %s/v1/auth/github?next=/\n", apiURL)
	} else {
		fmt.Fprintf(w, "Sign in: %s/v1/auth/github?next=/v1/me\n", apiURL)
	}
	if cliLine != "" {
		fmt.Fprintln(w, cliLine)
	}
	fmt.Fprintln(w, "Ctrl-C stops the roles; instances and dependencies keep running (scripts/deps.sh down).")
	return stop()
}

// welcome signs the CLI in as the dev user and makes examples/hello serve,
// each a stage of the progress display. A failure is shown, not returned:
// the platform runs without them. It returns hello's URL ("" when it does
// not serve) and the summary's line about the CLI.
func welcome(ctx context.Context, cfg config.Dev, env Env, apiAddr string, prog *progress, log *slog.Logger) (helloURL, cliLine string) {
	// The CLI's own spelling of the dev API (DefaultAPIURL for the default
	// ports): the credentials file names the API the way `zeitwork login`
	// would.
	apiURL := "http://" + apiAddr
	u := &user{env: Env{Environ: env.Environ, Stdout: io.Discard, Stderr: io.Discard}}
	prog.start("cli login", "signing in as "+githubemu.DevLogin)
	owner, err := devenv.SudoLoginOwner(env.vars())
	if err != nil {
		prog.fail("cli login", err)
		return "", ""
	}
	u.owner = owner
	pool, err := openDatabase(ctx, cfg.Database)
	if err != nil {
		prog.fail("cli login", err)
		return "", ""
	}
	defer pool.Close()
	login, err := signInDev(ctx, account.Store{DB: pool}, u, apiURL)
	if err != nil {
		prog.fail("cli login", err)
		log.ErrorContext(ctx, "sign in the dev user", "err", err)
		return "", ""
	}
	if login.revoke != nil {
		defer login.revoke(context.WithoutCancel(ctx))
	}
	if login.path != "" {
		prog.done("cli login", "signed in as "+githubemu.DevLogin+", token in "+login.path)
		cliLine = "CLI: signed in as " + githubemu.DevLogin + " (zeitwork whoami)"
	} else {
		prog.done("cli login", "left your login to "+login.other+" alone")
		cliLine = fmt.Sprintf("CLI: your login to %s is left alone; for dev: zeitwork login --api %s", login.other, apiURL)
	}

	prog.start("hello", "deploying examples/hello (the first build takes a minute)")
	c, err := client.NewAPI(apiURL, login.token, u.http())
	if err != nil {
		prog.fail("hello", err)
		return "", cliLine
	}
	url, deployed, err := ensureHello(ctx, c, u, cfg.State())
	switch {
	case err != nil:
		prog.fail("hello", err)
		log.ErrorContext(ctx, "deploy examples/hello", "err", err)
	case deployed:
		prog.done("hello", "deployed: "+url)
	default:
		prog.done("hello", "serving: "+url)
	}
	return url, cliLine
}

// devDefaults are where dev differs from production when the caller says
// nothing: readable logs, and apps under *.localhost, which browsers
// resolve to this machine.
var devDefaults = map[string]string{
	"LOG_FORMAT":       "text",
	"EDGE_APPS_DOMAIN": "zeitwork.localhost",
}

// devVars is the environment every dev role parses: the caller's
// variables over dev's defaults over the local dependencies' endpoints.
func devVars(caller map[string]string) map[string]string {
	vars := devenv.Environment(devDefaults)
	maps.Copy(vars, caller)
	if _, set := caller["EDGE_HOST"]; !set {
		// Custom domains point at the dev edge's name.
		vars["EDGE_HOST"] = "edge." + vars["EDGE_APPS_DOMAIN"]
	}
	return vars
}

type devRoleConfigs struct {
	api config.API
	// apiVars is what api parses: `zeitwork api` runs as it would alone.
	apiVars  map[string]string
	operator config.Operator
	edge     config.Edge
	builder  config.Builder
	nodes    []config.NodeAgent
}

// devRoles parses every role's configuration from vars and the settings
// dev owns: listeners on loopback numbered from DEV_PORT_BASE (the api at
// -20, the operator at -19, the edge at -18 and -17, the GitHub emulator
// at -16 and -15, node i at +i and +100+i), state
// under the platform's state directory, and each node's host resources
// named <DEV_PREFIX>-node<i>.
//
// dbURLs, when not nil, is each role's DATABASE_URL: its own user.
func devRoles(cfg config.Dev, vars map[string]string, dbURLs map[dbrole.Role]string) (devRoleConfigs, error) {
	var r devRoleConfigs
	var err error
	// as is vars with role's own database user, when it has one.
	as := func(role dbrole.Role, vars map[string]string) map[string]string {
		if u, ok := dbURLs[role]; ok {
			return with(vars, map[string]string{"DATABASE_URL": u})
		}
		return vars
	}
	local := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	state := cfg.State()
	if _, set := vars["EDGE_APPS_URL"]; !set {
		// Deployments' URLs, as the api shows them, reach dev's edge: plain
		// HTTP on its port.
		vars = with(vars, map[string]string{"EDGE_APPS_URL": fmt.Sprintf("http://%s:%d", vars["EDGE_APPS_DOMAIN"], cfg.PortBase-18)})
	}
	if _, set := vars["API_WEB_DIR"]; !set {
		// Run from a checkout with the dashboard built (scripts/test and
		// scripts/dev's setup build it), the api serves it under /.
		if abs, err := filepath.Abs(devWebBundle); err == nil && fileExists(filepath.Join(abs, "index.html")) {
			vars = with(vars, map[string]string{"API_WEB_DIR": abs})
		}
	}
	// API_DEV: the session cookie goes to http://localhost without Secure.
	r.apiVars = with(as(dbrole.API, vars), map[string]string{"API_ADDR": local(cfg.PortBase - 20), "API_DEV": "true"})
	if r.api, err = config.ParseFrom[config.API](r.apiVars); err != nil {
		return r, err
	}
	if r.operator, err = config.ParseFrom[config.Operator](with(as(dbrole.Operator, vars), map[string]string{
		"OPERATOR_ADDR": local(cfg.PortBase - 19),
	})); err != nil {
		return r, err
	}
	// The edge serves plain HTTP on loopback: http://<project>.zeitwork.localhost:28082.
	if r.edge, err = config.ParseFrom[config.Edge](with(as(dbrole.Edge, vars), map[string]string{
		"EDGE_HTTP_ADDR":       local(cfg.PortBase - 18),
		"EDGE_HTTPS_ADDR":      "off",
		"EDGE_METRICS_ADDR":    local(cfg.PortBase - 17),
		"EDGE_ROUTES_SNAPSHOT": filepath.Join(state, "edge-routes.json"),
		// Notifications move routes at once; polling soon after a missed
		// one keeps a dev session from looking stuck.
		"EDGE_POLL_INTERVAL": "5s",
	})); err != nil {
		return r, err
	}
	if r.builder, err = config.ParseFrom[config.Builder](with(as(dbrole.Builder, vars), map[string]string{
		"BUILDER_ID": string(cfg.Prefix) + "-builder",
	})); err != nil {
		return r, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		name := devenv.NodeName(string(cfg.Prefix), i)
		ns, err := devenv.EnsureNetns(name)
		if err != nil {
			return r, fmt.Errorf("simulated node %d needs a network namespace (run as root): %w", i, err)
		}
		proxy := local(cfg.PortBase + 100 + i)
		n, err := config.ParseFrom[config.NodeAgent](with(as(dbrole.NodeAgent, vars), map[string]string{
			"NODE_INTERNAL_ADDRESS": proxy,
			"NODEPROXY_ADDR":        proxy,
			"NODEAGENT_ADDR":        local(cfg.PortBase + i),
			"NODE_REGION":           "dev",
			// Variables come from the operator, which holds the keys.
			"OPERATOR_URL":         "http://" + local(cfg.PortBase-19),
			"NODE_STATE_DIR":       filepath.Join(state, name),
			"INSTANCE_LOG_DIR":     filepath.Join(state, name, "logs"),
			"NETWORK_NODE_NETNS":   ns,
			"NODE_EGRESS":          "nat", // through the machine; the control plane stays out of reach
			"CONTAINERD_NAMESPACE": name,
			// Simulated nodes share one machine: none may claim all of it.
			"NODE_CPU_MILLIS": "2000",
			"NODE_MEMORY_MB":  "4096",
		}))
		if err != nil {
			return r, err
		}
		// Three heartbeats fit in the operator's deadline, however short a
		// test makes it.
		n.HeartbeatInterval = min(n.HeartbeatInterval, r.operator.NodeHeartbeatDeadline/3)
		r.nodes = append(r.nodes, n)
	}
	return r, nil
}

// with returns vars with overrides on top.
func with(vars, overrides map[string]string) map[string]string {
	out := maps.Clone(vars)
	maps.Copy(out, overrides)
	return out
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
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

// devWebBundle is where the dashboard's static build lands in a checkout.
const devWebBundle = "packages/web/.output/public"

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
