package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// The steps one instance takes on its node: pull and create, start, health
// check, restart after a crash with backoff, stop. Each reports what it
// observed; none waits for the next.

func (c *Converger) create(ctx context.Context, a instance.Assignment, log *slog.Logger) {
	in := a.Instance
	began := time.Now()
	pending, err := c.pull(ctx, a)
	if pending {
		return
	}
	if err != nil {
		c.attemptFailed(ctx, in, errors.Is(err, runtime.ErrImageNotFound), fmt.Sprintf("cannot pull image %s: %v", a.Image, err), log)
		return
	}
	env, err := c.environment(ctx, in)
	if err != nil {
		// The control plane may be away for a moment (an operator
		// restarting): try again on the next passes before giving up.
		final := errors.Is(err, errNoControl) || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotAssigned)
		c.attemptFailed(ctx, in, final, err.Error(), log)
		return
	}
	spec := runtime.Spec{
		InstanceID: in.ID, Image: a.Image, Env: env, Port: int(in.Port),
		CPUMillis: int(in.CPUMillis), MemoryMB: int(in.MemoryMB), HostNetwork: c.Policy.HostNetwork,
		// A share of the node's CPUs in proportion to what it reserved.
		CPURequestMillis: int(node.CPURequest(in.CPUMillis)),
	}
	release, ok := c.slot(ctx)
	if !ok {
		return
	}
	pulled := time.Now()
	if c.Network != nil && !c.Policy.HostNetwork {
		att, err := c.Network.Setup(ctx, network.Instance{ID: in.ID, Addr: in.Addr, Port: int(in.Port)})
		if err != nil {
			release()
			c.report(ctx, in, instance.StateFailed, "network: "+err.Error())
			return
		}
		spec.NetNSPath, spec.ResolvConf = att.Netns, att.ResolvConf
	}
	networked := time.Now()
	err = c.Runtime.Create(ctx, spec)
	release()
	if err != nil {
		c.report(ctx, in, instance.StateFailed, "create: "+err.Error())
		return
	}
	// Where an instance's start went, for whoever tunes it (bench/): prepare
	// is the image check or pull (and its report, if it took a while) and the
	// variables.
	log.InfoContext(ctx, "instance set up", "prepare_ms", ms(pulled.Sub(began)), "network_ms", ms(networked.Sub(pulled)), "create_ms", ms(time.Since(networked)))
	c.start(ctx, a, log)
}

// attemptFailed counts a failed attempt to get what an instance needs (its
// image, its environment); the instance fails when final or after
// Policy.PullAttempts of them.
func (c *Converger) attemptFailed(ctx context.Context, in instance.Instance, final bool, reason string, log *slog.Logger) {
	c.mu.Lock()
	c.pullFailed[in.ID]++
	n := c.pullFailed[in.ID]
	c.mu.Unlock()
	if final || n >= c.Policy.PullAttempts {
		c.report(ctx, in, instance.StateFailed, reason)
		return
	}
	log.WarnContext(ctx, "instance cannot be created yet; will retry", "attempt", n, "err", reason)
}

// pull is one instance's image pull, running on its own.
type pull struct {
	done chan struct{}
	err  error
	// given up on is set when a pass stopped waiting for the pull: its end
	// then wakes the agent, so that the instance is created at once rather
	// than at the next poll.
	givenUp atomic.Bool
}

// startPull starts a's pull in the background and records it; c.mu is held.
func (c *Converger) startPull(ctx context.Context, a instance.Assignment, auth *runtime.Auth) *pull {
	p := &pull{done: make(chan struct{})}
	c.pulls[a.ID] = p
	// Not the pass's context: the pull outlives the pass that began it.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Policy.PullTimeout)
	go func() {
		defer cancel()
		p.err = c.Runtime.Pull(pctx, a.Image, auth)
		if p.err != nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			p.err = fmt.Errorf("gave up after %s: %w", c.Policy.PullTimeout, p.err)
		}
		close(p.done)
		if p.givenUp.Load() && c.Ready != nil {
			c.Ready()
		}
	}()
	return p
}

// pull starts the instance's pull and waits for it up to PullWait, or
// looks whether the one under way is done; pending means it is still going.
func (c *Converger) pull(ctx context.Context, a instance.Assignment) (pending bool, err error) {
	c.mu.Lock()
	p, ok := c.pulls[a.ID]
	c.mu.Unlock()
	if !ok {
		// The credential is asked for outside the lock: it may come from
		// the control plane.
		auth, err := c.registryAuth(ctx)
		if err != nil {
			return false, err
		}
		c.mu.Lock()
		if p, ok = c.pulls[a.ID]; !ok {
			p = c.startPull(ctx, a, auth)
		}
		c.mu.Unlock()
	}
	patience := c.Policy.PullWait
	if ok {
		// Waited for once already: later passes only look.
		patience = 0
	}
	// An image already on the node is checked in a few milliseconds: the
	// instance is said to be pulling only when its pull takes longer, so
	// that the state means what it says and a cached start skips a write.
	quick := min(pullingAfter, patience)
	done, cancelled := awaitPull(ctx, p, quick)
	if !done && !cancelled {
		c.report(ctx, a.Instance, instance.StatePulling, "")
		done, cancelled = awaitPull(ctx, p, patience-quick)
	}
	switch {
	case cancelled:
		return true, nil
	case !done:
		p.givenUp.Store(true)
		select {
		case <-p.done: // a zero wait races with a done pull: done wins
		default:
			return true, nil
		}
	}
	c.mu.Lock()
	delete(c.pulls, a.ID)
	c.mu.Unlock()
	return false, p.err
}

// pullingAfter is how long a pull may take before its instance is
// reported pulling.
const pullingAfter = 50 * time.Millisecond

// awaitPull waits up to d for p to end (done), or for the pass's context
// to end (cancelled); d <= 0 only looks.
func awaitPull(ctx context.Context, p *pull, d time.Duration) (done, cancelled bool) {
	if d <= 0 {
		select {
		case <-p.done:
			return true, false
		default:
			return false, false
		}
	}
	wait := time.NewTimer(d)
	defer wait.Stop()
	select {
	case <-p.done:
		return true, false
	case <-wait.C:
		return false, false
	case <-ctx.Done():
		return false, true
	}
}

func (c *Converger) start(ctx context.Context, a instance.Assignment, _ *slog.Logger) {
	in := a.Instance
	release, ok := c.slot(ctx)
	if !ok {
		return
	}
	err := c.Runtime.Start(ctx, in.ID)
	release()
	if err != nil {
		c.report(ctx, in, instance.StateFailed, "start: "+err.Error())
		return
	}
	c.mu.Lock()
	c.started[in.ID] = time.Now()
	c.mu.Unlock()
	if c.Ready == nil || c.Policy.StartProbe <= 0 {
		c.report(ctx, in, instance.StateStarting, "")
		return
	}
	// The start probe's first try goes at once, while "starting" is
	// written: most apps answer within a few milliseconds, about what the
	// write takes. Its answer is this step's to report, after "starting"
	// and before the step ends: the pass that started an app that answers
	// at once has it healthy. The step waits for the try (a refused
	// connection is immediate; an app that accepted and is slow to answer
	// holds it up to the probe's timeout, as a pass's check would).
	first := make(chan error, 1)
	go func() { first <- c.Probe(ctx, c.addr(in), a.HealthCheckPath) }()
	c.report(ctx, in, instance.StateStarting, "")
	if <-first == nil {
		c.startAnswered(ctx, in.ID)
		c.Ready()
		return
	}
	c.probeStarting(ctx, a)
}

// probeStarting goes on probing a just-started instance that did not
// answer the first try, on its own, every StartProbe (four times, then
// each wait doubles, up to StartProbeMax), and on its first answer
// reports it healthy then and there, as a pass would (reportStarted), and
// calls Ready. A whole pass between the answer and "healthy" cost a list
// of the node's instances, one of its containers and a firewall check.
func (c *Converger) probeStarting(ctx context.Context, a instance.Assignment) {
	addr := c.addr(a.Instance)
	go func() {
		wait := c.Policy.StartProbe
		for n := 1; wait <= c.Policy.StartProbeMax; n++ {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if c.Probe(ctx, addr, a.HealthCheckPath) == nil {
				c.reportStarted(ctx, a)
				c.Ready()
				return
			}
			if n%4 == 0 {
				wait *= 2
			}
		}
	}()
}

// reportStarted reports healthy an instance that has just answered its
// start probe, as a step of its own: it waits for the step under way (the
// start that began the probe may not have ended yet; a pass's health
// check) to end rather than lose the answer to it.
func (c *Converger) reportStarted(ctx context.Context, a instance.Assignment) {
	if !c.awaitStep(ctx, a.ID) {
		return
	}
	defer c.stepDone(a.ID)
	c.startAnswered(ctx, a.ID)
}

// startAnswered reports healthy, without probing it again, an instance
// that answered its start probe: from its row read afresh, and only while
// it is wanted running and still starting (a step in between may have
// reported it otherwise). The caller holds the instance's step.
func (c *Converger) startAnswered(ctx context.Context, iid uuid.UUID) {
	in, err := c.store().Get(ctx, iid)
	if err != nil || in.Desired != instance.DesiredRunning || in.State != instance.StateStarting {
		return
	}
	c.answered(ctx, in)
}

// check health-checks a running instance; true while it has not yet been
// healthy and is within its deadline.
func (c *Converger) check(ctx context.Context, a instance.Assignment, obs runtime.Status) bool {
	in := a.Instance
	err := c.Probe(ctx, c.addr(in), a.HealthCheckPath)
	if err == nil {
		c.answered(ctx, in)
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
	switch in.State {
	case instance.StateStarting, instance.StatePulling, instance.StatePending:
		if time.Since(since) < c.Policy.HealthDeadline {
			return true
		}
	}
	reason := fmt.Sprintf("health check GET %s on port %d failed: %v", a.HealthCheckPath, in.Port, err)
	if in.State != instance.StateUnhealthy || in.StateReason != reason {
		c.report(ctx, in, instance.StateUnhealthy, reason)
	}
	return false
}

// answered reports healthy an instance that answered its health check.
func (c *Converger) answered(ctx context.Context, in instance.Instance) {
	c.mu.Lock()
	delete(c.pullFailed, in.ID)
	c.mu.Unlock()
	if in.State == instance.StateHealthy {
		return
	}
	if in.RestartCount > 0 && in.State == instance.StateStarting {
		// Healthy again after a crash: the crash loop is over.
		if err := c.store().ResetRestarts(ctx, in.ID); err != nil {
			c.Log.WarnContext(ctx, "reset restart count", "instance_id", in.ID, "err", err)
		}
	}
	c.report(ctx, in, instance.StateHealthy, "")
}

func (c *Converger) crashed(ctx context.Context, a instance.Assignment, obs runtime.Status, log *slog.Logger) {
	in := a.Instance
	why := fmt.Sprintf("exited with code %d", obs.ExitCode)
	switch {
	case obs.OOMKilled:
		why = fmt.Sprintf("killed for using more than its %d MiB of memory", in.MemoryMB)
	case obs.DiskKilled:
		// A restart would run on the same full layer: the instance fails,
		// and the operator replaces it with a new one on a fresh layer.
		c.report(ctx, in, instance.StateFailed, "killed for writing more than INSTANCE_DISK_LIMIT_MB to its own filesystem (write to object storage or a database instead)")
		return
	}
	c.mu.Lock()
	retry, waiting := c.retryAt[in.ID]
	c.mu.Unlock()
	if !waiting {
		if in.RestartCount >= c.Policy.MaxRestarts {
			c.report(ctx, in, instance.StateFailed, fmt.Sprintf("%s; gave up after %d restarts", why, in.RestartCount))
			return
		}
		backoff := min(c.Policy.RestartBackoff<<in.RestartCount, c.Policy.MaxBackoff)
		c.mu.Lock()
		c.retryAt[in.ID] = time.Now().Add(backoff)
		c.mu.Unlock()
		c.report(ctx, in, instance.StateUnhealthy, fmt.Sprintf("%s; restarting in %s", why, backoff))
		return
	}
	if time.Now().Before(retry) {
		return
	}
	c.mu.Lock()
	delete(c.retryAt, in.ID)
	c.mu.Unlock()
	if err := c.store().CountRestart(ctx, in.ID); err != nil {
		log.WarnContext(ctx, "count restart", "err", err)
	}
	c.start(ctx, a, log)
}

// stop ends the instance and removes its network, then reports it
// stopped. The stop runs on its own: the pass waits for it up to
// Policy.StopWait and moves on, and the stop wakes the agent when it is
// done. A later pass that finds it still under way only waits again.
func (c *Converger) stop(ctx context.Context, in instance.Instance, obs runtime.Status, log *slog.Logger) {
	if obs.State != runtime.StateMissing && in.State != instance.StateStopping && !c.stopping(in.ID) {
		c.report(ctx, in, instance.StateStopping, "")
	}
	c.inBackground(ctx, in.ID, func(ctx context.Context) {
		if obs.State != runtime.StateMissing {
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
		delete(c.pulls, in.ID)
		c.mu.Unlock()
		if in.Desired == instance.DesiredStopped && in.State != instance.StateStopped {
			c.report(ctx, in, instance.StateStopped, "")
		}
	})
}

// stopOrphan stops, in the background as stop does, a container that the
// database does not want here.
func (c *Converger) stopOrphan(ctx context.Context, iid uuid.UUID) {
	if !c.stopping(iid) {
		c.Log.InfoContext(ctx, "stopping instance the database does not want here", "instance_id", iid)
	}
	c.inBackground(ctx, iid, func(ctx context.Context) {
		if err := c.Runtime.Stop(ctx, iid, c.Policy.StopGrace); err != nil {
			c.Log.WarnContext(ctx, "stop orphan", "instance_id", iid, "err", err)
			return
		}
		if c.Network != nil {
			if err := c.Network.Teardown(ctx, iid); err != nil {
				c.Log.WarnContext(ctx, "teardown orphan", "instance_id", iid, "err", err)
			}
		}
	})
}

func (c *Converger) stopping(iid uuid.UUID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.stops[iid]
	return ok
}

// inBackground runs the instance's stop unless one is under way, waits
// for it up to Policy.StopWait, and leaves it running after that; a stop
// that ends after the pass stopped waiting wakes the agent (Ready), so
// that the next pass sees what it left.
func (c *Converger) inBackground(ctx context.Context, iid uuid.UUID, stop func(context.Context)) {
	c.mu.Lock()
	done, ok := c.stops[iid]
	if !ok {
		done = make(chan struct{})
		c.stops[iid] = done
	}
	c.mu.Unlock()
	var waited atomic.Bool
	if !ok {
		go func() {
			stop(ctx)
			c.mu.Lock()
			delete(c.stops, iid)
			c.ended[iid] = time.Now() // as for a step: a pass that read before may not see it
			c.mu.Unlock()
			close(done)
			if waited.Load() && c.Ready != nil {
				c.Ready()
			}
		}()
	}
	t := time.NewTimer(c.Policy.StopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		waited.Store(true)
		select {
		case <-done: // a stop that ended meanwhile needs no wake-up
		default:
		}
	case <-ctx.Done():
	}
}

var errNoControl = errors.New("this node has no control plane (OPERATOR_URL) to get variables from")

// environment is the instance's variables, which the control plane
// decrypts for this node alone: the node holds no key, and exists in
// plaintext only here, on their way into the instance. Which variables a
// deployment gets (a preview never a production-only secret) is decided
// there too.
func (c *Converger) environment(ctx context.Context, in instance.Instance) (map[string]string, error) {
	if c.Control == nil {
		// Without a control plane only an instance without variables runs.
		vars, err := db.New(c.Pool).EnvironmentVariableListForDeployment(ctx, in.DeploymentID)
		if err != nil {
			return nil, fmt.Errorf("environment: %w", err)
		}
		if len(vars) > 0 {
			return nil, fmt.Errorf("%w: environment variable %s cannot be had", errNoControl, vars[0].Name)
		}
		return map[string]string{}, nil
	}
	env, err := c.Control.Environment(ctx, in.ID)
	if err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	return env, nil
}

// registryAuth is the credential the node pulls with: the configured one,
// or the control plane's, scoped to what the node runs.
func (c *Converger) registryAuth(ctx context.Context) (*runtime.Auth, error) {
	if c.Policy.RegistryAuth != nil || c.Control == nil {
		return c.Policy.RegistryAuth, nil
	}
	auth, err := c.Control.RegistryAuth(ctx)
	if errors.Is(err, ErrNoRegistryTokens) {
		return nil, nil // a registry without auth (local development)
	}
	if err != nil {
		return nil, fmt.Errorf("registry credential: %w", err)
	}
	return auth, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
