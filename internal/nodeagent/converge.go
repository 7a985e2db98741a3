package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Runtime is what the agent needs of internal/runtime (containerd).
type Runtime interface {
	Pull(ctx context.Context, ref string, auth *runtime.Auth) error
	Create(ctx context.Context, s runtime.Spec) error
	Start(ctx context.Context, id uuid.UUID) error
	Stop(ctx context.Context, id uuid.UUID, grace time.Duration) error
	List(ctx context.Context) ([]runtime.Status, error)
}

// Network is what the agent needs of internal/network.
type Network interface {
	Setup(ctx context.Context, inst network.Instance) (network.Attachment, error)
	Teardown(ctx context.Context, id uuid.UUID) error
}

// Prober health-checks one instance once.
type Prober func(ctx context.Context, addr netip.AddrPort, path string) error

// Policy tunes convergence.
type Policy struct {
	// HealthDeadline is how long a started instance may take to answer its
	// health check before it is reported unhealthy.
	HealthDeadline time.Duration
	// StopGrace is how long an instance has between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// RestartBackoff is the first wait before restarting a crashed
	// instance; it doubles per restart up to MaxBackoff.
	RestartBackoff, MaxBackoff time.Duration
	// MaxRestarts is how many crashes in a row end in "failed".
	MaxRestarts int32
	// PullAttempts is how many passes may fail to pull before "failed".
	PullAttempts int
	// RegistryAuth is what the node pulls images with (read-only).
	RegistryAuth *runtime.Auth
	// HostNetwork runs instances in the node's network namespace instead
	// of their own (local tests without root only: no isolation).
	HostNetwork bool
}

// DefaultPolicy is what a production node runs with.
var DefaultPolicy = Policy{
	HealthDeadline: 60 * time.Second, StopGrace: 10 * time.Second,
	RestartBackoff: time.Second, MaxBackoff: time.Minute, MaxRestarts: 5, PullAttempts: 3,
}

// Converger makes what runs on this node match the database.
type Converger struct {
	Pool    *pgxpool.Pool
	NodeID  uuid.UUID
	Runtime Runtime
	Network Network
	Probe   Prober
	Secrets *secret.Ring
	Policy  Policy
	Log     *slog.Logger

	mu         sync.Mutex
	current    map[uuid.UUID]db.Instance // as last read and reported: the node-proxy routes by it
	started    map[uuid.UUID]time.Time   // when the current run of an instance began
	retryAt    map[uuid.UUID]time.Time   // crashed: not before this
	pullFailed map[uuid.UUID]int
}

// desired is one instance as the database wants it.
type desired = db.InstanceListForAgentRow

// Pass converges once: every instance of this node is looked at, and any
// that runs here without being wanted is stopped. It returns how many
// instances are still on their way (starting), so the caller can come
// back sooner.
func (c *Converger) Pass(ctx context.Context) (pending int, err error) {
	c.init()
	q := db.New(c.Pool)
	want, err := q.InstanceListForAgent(ctx, c.NodeID)
	if err != nil {
		return 0, fmt.Errorf("list instances: %w", err)
	}
	have, err := c.Runtime.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	c.mu.Lock()
	c.current = make(map[uuid.UUID]db.Instance, len(want))
	for _, d := range want {
		c.current[d.Instance.ID] = d.Instance
	}
	c.mu.Unlock()
	observed := make(map[uuid.UUID]runtime.Status, len(have))
	for _, s := range have {
		observed[s.InstanceID] = s
	}

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		wanted  = make(map[uuid.UUID]bool, len(want))
		pendCnt int
	)
	// Instances converge in parallel: one slow pull must not hold up a
	// crashed neighbour's restart.
	for _, d := range want {
		wanted[d.Instance.ID] = true
		obs, ok := observed[d.Instance.ID]
		if !ok {
			obs = runtime.Status{InstanceID: d.Instance.ID, State: runtime.StateMissing}
		}
		wg.Go(func() {
			if c.converge(ctx, d, obs) {
				mu.Lock()
				pendCnt++
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	for _, s := range have {
		if wanted[s.InstanceID] {
			continue
		}
		// Running here but not wanted (its row is gone, stopped for good,
		// or moved): stop it. This is also how a restarted agent cleans up
		// after a stop it did not finish.
		if s.State != runtime.StateMissing {
			c.Log.InfoContext(ctx, "stopping instance the database does not want here", "instance_id", s.InstanceID)
			if err := c.Runtime.Stop(ctx, s.InstanceID, c.Policy.StopGrace); err != nil {
				c.Log.WarnContext(ctx, "stop orphan", "instance_id", s.InstanceID, "err", err)
				continue
			}
			if c.Network != nil {
				if err := c.Network.Teardown(ctx, s.InstanceID); err != nil {
					c.Log.WarnContext(ctx, "teardown orphan", "instance_id", s.InstanceID, "err", err)
				}
			}
		}
	}
	return pendCnt, nil
}

func (c *Converger) init() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started == nil {
		c.started, c.retryAt, c.pullFailed = map[uuid.UUID]time.Time{}, map[uuid.UUID]time.Time{}, map[uuid.UUID]int{}
	}
}

// converge moves one instance one step; it reports whether the instance is
// still on its way to healthy.
func (c *Converger) converge(ctx context.Context, d desired, obs runtime.Status) bool {
	in := d.Instance
	log := c.Log.With("instance_id", in.ID)
	if in.DesiredState == "stopped" {
		c.stop(ctx, in, obs, log)
		return false
	}
	if in.State == "failed" {
		// Terminal: the operator replaces it. Make sure nothing lingers.
		if obs.State != runtime.StateMissing {
			c.stop(ctx, in, obs, log)
		}
		return false
	}

	switch obs.State {
	case runtime.StateMissing:
		c.create(ctx, d, log)
		return true
	case runtime.StateCreated:
		c.start(ctx, in, log)
		return true
	case runtime.StateRunning:
		return c.check(ctx, d, obs)
	case runtime.StateExited:
		c.crashed(ctx, in, obs, log)
		return true
	default:
		log.WarnContext(ctx, "instance in an unexpected state", "state", obs.State, "detail", obs.Detail)
		return false
	}
}

func (c *Converger) create(ctx context.Context, d desired, log *slog.Logger) {
	in := d.Instance
	ref := d.ImageRepository + "@" + d.ImageDigest
	c.report(ctx, in, "pulling", "")
	if err := c.Runtime.Pull(ctx, ref, c.Policy.RegistryAuth); err != nil {
		c.mu.Lock()
		c.pullFailed[in.ID]++
		n := c.pullFailed[in.ID]
		c.mu.Unlock()
		if errors.Is(err, runtime.ErrImageNotFound) || n >= c.Policy.PullAttempts {
			c.report(ctx, in, "failed", fmt.Sprintf("cannot pull image %s: %v", ref, err))
		} else {
			log.WarnContext(ctx, "pull failed; will retry", "attempt", n, "err", err)
		}
		return
	}
	env, err := c.environment(ctx, d.ProjectID)
	if err != nil {
		c.report(ctx, in, "failed", err.Error())
		return
	}
	spec := runtime.Spec{
		InstanceID: in.ID, Image: ref, Env: env, Port: int(in.Port),
		CPUMillis: int(in.CpuMillis), MemoryMB: int(in.MemoryMb), HostNetwork: c.Policy.HostNetwork,
	}
	if c.Network != nil && !c.Policy.HostNetwork {
		att, err := c.Network.Setup(ctx, network.Instance{ID: in.ID, Addr: in.Ipv6Address, Port: int(in.Port)})
		if err != nil {
			c.report(ctx, in, "failed", "network: "+err.Error())
			return
		}
		spec.NetNSPath = att.Netns
	}
	if err := c.Runtime.Create(ctx, spec); err != nil {
		c.report(ctx, in, "failed", "create: "+err.Error())
		return
	}
	c.start(ctx, in, log)
}

func (c *Converger) start(ctx context.Context, in db.Instance, _ *slog.Logger) {
	if err := c.Runtime.Start(ctx, in.ID); err != nil {
		c.report(ctx, in, "failed", "start: "+err.Error())
		return
	}
	c.mu.Lock()
	c.started[in.ID] = time.Now()
	c.mu.Unlock()
	c.report(ctx, in, "starting", "")
}

// check health-checks a running instance; true while it has not yet been
// healthy and is within its deadline.
func (c *Converger) check(ctx context.Context, d desired, obs runtime.Status) bool {
	in := d.Instance
	err := c.Probe(ctx, c.addr(in), d.HealthCheckPath)
	if err == nil {
		c.mu.Lock()
		delete(c.pullFailed, in.ID)
		c.mu.Unlock()
		if in.State != "healthy" {
			if in.RestartCount > 0 && in.State == "starting" {
				// Healthy again after a crash: the crash loop is over.
				if _, err := db.New(c.Pool).InstanceResetRestartCount(ctx, in.ID); err != nil {
					c.Log.WarnContext(ctx, "reset restart count", "instance_id", in.ID, "err", err)
				}
			}
			c.report(ctx, in, "healthy", "")
		}
		return false
	}
	c.mu.Lock()
	since, ok := c.started[in.ID]
	if !ok {
		// Adopted after an agent restart: the run began when containerd
		// says it did.
		since = obs.StartedAt
		c.started[in.ID] = since
	}
	c.mu.Unlock()
	if in.State == "starting" || in.State == "pulling" || in.State == "pending" {
		if time.Since(since) < c.Policy.HealthDeadline {
			return true
		}
	}
	reason := fmt.Sprintf("health check GET %s on port %d failed: %v", d.HealthCheckPath, in.Port, err)
	if in.State != "unhealthy" || deref(in.StateReason) != reason {
		c.report(ctx, in, "unhealthy", reason)
	}
	return false
}

func (c *Converger) crashed(ctx context.Context, in db.Instance, obs runtime.Status, log *slog.Logger) {
	why := fmt.Sprintf("exited with code %d", obs.ExitCode)
	if obs.OOMKilled {
		why = fmt.Sprintf("killed for using more than its %d MiB of memory", in.MemoryMb)
	}
	c.mu.Lock()
	retry, waiting := c.retryAt[in.ID]
	c.mu.Unlock()
	if !waiting {
		if in.RestartCount >= c.Policy.MaxRestarts {
			c.report(ctx, in, "failed", fmt.Sprintf("%s; gave up after %d restarts", why, in.RestartCount))
			return
		}
		backoff := min(c.Policy.RestartBackoff<<in.RestartCount, c.Policy.MaxBackoff)
		c.mu.Lock()
		c.retryAt[in.ID] = time.Now().Add(backoff)
		c.mu.Unlock()
		c.report(ctx, in, "unhealthy", fmt.Sprintf("%s; restarting in %s", why, backoff))
		return
	}
	if time.Now().Before(retry) {
		return
	}
	c.mu.Lock()
	delete(c.retryAt, in.ID)
	c.mu.Unlock()
	if _, err := db.New(c.Pool).InstanceIncrementRestartCount(ctx, in.ID); err != nil {
		log.WarnContext(ctx, "count restart", "err", err)
	}
	c.start(ctx, in, log)
}

func (c *Converger) stop(ctx context.Context, in db.Instance, obs runtime.Status, log *slog.Logger) {
	if obs.State != runtime.StateMissing {
		if in.State != "stopping" {
			c.report(ctx, in, "stopping", "")
		}
		if err := c.Runtime.Stop(ctx, in.ID, c.Policy.StopGrace); err != nil {
			log.WarnContext(ctx, "stop", "err", err)
			return
		}
	}
	if c.Network != nil && !c.Policy.HostNetwork {
		if err := c.Network.Teardown(ctx, in.ID); err != nil {
			log.WarnContext(ctx, "teardown", "err", err)
			return
		}
	}
	c.mu.Lock()
	delete(c.started, in.ID)
	delete(c.retryAt, in.ID)
	delete(c.pullFailed, in.ID)
	c.mu.Unlock()
	if in.DesiredState == "stopped" && in.State != "stopped" {
		c.report(ctx, in, "stopped", "")
	}
}

// report writes an observed state back, only when it changed.
func (c *Converger) report(ctx context.Context, in db.Instance, state, reason string) {
	if in.State == state && deref(in.StateReason) == reason {
		return
	}
	var r *string
	if reason != "" {
		r = &reason
	}
	if _, err := db.New(c.Pool).InstanceSetState(ctx, db.InstanceSetStateParams{ID: in.ID, State: state, StateReason: r}); err != nil {
		c.Log.WarnContext(ctx, "report state", "instance_id", in.ID, "state", state, "err", err)
		return
	}
	c.mu.Lock()
	if cur, ok := c.current[in.ID]; ok {
		cur.State, cur.StateReason = state, r
		c.current[in.ID] = cur
	}
	c.mu.Unlock()
	c.Log.InfoContext(ctx, "instance state", "instance_id", in.ID, "state", state, "reason", reason)
}

// Target says where the node-proxy reaches an instance and whether it may
// take traffic, from what the last pass saw and reported.
func (c *Converger) Target(iid uuid.UUID) (addr netip.AddrPort, healthy, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in, ok := c.current[iid]
	if !ok || in.DesiredState != "running" {
		return netip.AddrPort{}, false, false
	}
	return c.addr(in), in.State == "healthy", true
}

func (c *Converger) addr(in db.Instance) netip.AddrPort {
	if c.Policy.HostNetwork {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(in.Port))
	}
	return netip.AddrPortFrom(in.Ipv6Address, uint16(in.Port))
}

// environment decrypts the project's variables; they exist in plaintext
// only here, on their way into the instance.
func (c *Converger) environment(ctx context.Context, projectID uuid.UUID) (map[string]string, error) {
	vars, err := db.New(c.Pool).EnvironmentVariableListByProject(ctx, projectID)
	if err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	env := make(map[string]string, len(vars))
	for _, v := range vars {
		if c.Secrets == nil {
			return nil, fmt.Errorf("environment variable %s cannot be decrypted: this node has no secrets key", v.Name)
		}
		plain, err := c.Secrets.Open(v.ValueCiphertext, v.KeyID, secret.EnvContext(projectID, v.Name))
		if err != nil {
			return nil, fmt.Errorf("environment variable %s cannot be decrypted: %w", v.Name, err)
		}
		env[v.Name] = string(plain)
	}
	return env, nil
}

// HTTPProbe returns the default health check: an HTTP GET of path that
// answers with any status below 500 within a second. A 404 still proves the
// app is up and serving; a 5xx or no answer does not. dial may be nil.
func HTTPProbe(dial nodeproxy.Dialer) Prober {
	transport := &http.Transport{DisableKeepAlives: true}
	if dial != nil {
		transport.DialContext = dial
	}
	client := &http.Client{
		Transport: transport,
		// A redirect is an answer: do not follow it somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, addr netip.AddrPort, path string) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr.Addr().String(), strconv.Itoa(int(addr.Port())))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "zeitwork-health-check")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
