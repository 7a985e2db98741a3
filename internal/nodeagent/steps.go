package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// The steps one instance takes on its node: pull and create, start, health
// check, restart after a crash with backoff, stop. Each reports what it
// observed; none waits for the next.

func (c *Converger) create(ctx context.Context, a instance.Assignment, log *slog.Logger) {
	in := a.Instance
	c.report(ctx, in, instance.StatePulling, "")
	pending, err := c.pull(ctx, a)
	if pending {
		return
	}
	if err != nil {
		c.mu.Lock()
		c.pullFailed[in.ID]++
		n := c.pullFailed[in.ID]
		c.mu.Unlock()
		if errors.Is(err, runtime.ErrImageNotFound) || n >= c.Policy.PullAttempts {
			c.report(ctx, in, instance.StateFailed, fmt.Sprintf("cannot pull image %s: %v", a.Image, err))
		} else {
			log.WarnContext(ctx, "pull failed; will retry", "attempt", n, "err", err)
		}
		return
	}
	env, err := c.environment(ctx, a.ProjectID, in.DeploymentID)
	if err != nil {
		c.report(ctx, in, instance.StateFailed, err.Error())
		return
	}
	spec := runtime.Spec{
		InstanceID: in.ID, Image: a.Image, Env: env, Port: int(in.Port),
		CPUMillis: int(in.CPUMillis), MemoryMB: int(in.MemoryMB), HostNetwork: c.Policy.HostNetwork,
		// A share of the node's CPUs in proportion to what it reserved.
		CPURequestMillis: int(node.CPURequest(in.CPUMillis)),
	}
	if c.Network != nil && !c.Policy.HostNetwork {
		att, err := c.Network.Setup(ctx, network.Instance{ID: in.ID, Addr: in.Addr, Port: int(in.Port)})
		if err != nil {
			c.report(ctx, in, instance.StateFailed, "network: "+err.Error())
			return
		}
		spec.NetNSPath, spec.ResolvConf = att.Netns, att.ResolvConf
	}
	if err := c.Runtime.Create(ctx, spec); err != nil {
		c.report(ctx, in, instance.StateFailed, "create: "+err.Error())
		return
	}
	c.start(ctx, in, log)
}

// pull is one instance's image pull, running on its own.
type pull struct {
	done chan struct{}
	err  error
}

// pull starts the instance's pull and waits for it up to PullWait, or
// looks whether the one under way is done; pending means it is still going.
func (c *Converger) pull(ctx context.Context, a instance.Assignment) (pending bool, err error) {
	c.mu.Lock()
	p, ok := c.pulls[a.ID]
	if !ok {
		p = &pull{done: make(chan struct{})}
		c.pulls[a.ID] = p
		// Not the pass's context: the pull outlives the pass that began it.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Policy.PullTimeout)
		go func() {
			defer cancel()
			defer close(p.done)
			p.err = c.Runtime.Pull(pctx, a.Image, c.Policy.RegistryAuth)
			if p.err != nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
				p.err = fmt.Errorf("gave up after %s: %w", c.Policy.PullTimeout, p.err)
			}
		}()
	}
	c.mu.Unlock()
	patience := c.Policy.PullWait
	if ok {
		// Waited for once already: later passes only look.
		patience = 0
	}
	wait := time.NewTimer(patience)
	defer wait.Stop()
	select {
	case <-p.done:
	case <-wait.C:
		select {
		case <-p.done: // a zero wait races with a done pull: done wins
		default:
			return true, nil
		}
	case <-ctx.Done():
		return true, nil
	}
	c.mu.Lock()
	delete(c.pulls, a.ID)
	c.mu.Unlock()
	return false, p.err
}

func (c *Converger) start(ctx context.Context, in instance.Instance, _ *slog.Logger) {
	if err := c.Runtime.Start(ctx, in.ID); err != nil {
		c.report(ctx, in, instance.StateFailed, "start: "+err.Error())
		return
	}
	c.mu.Lock()
	c.started[in.ID] = time.Now()
	c.mu.Unlock()
	c.report(ctx, in, instance.StateStarting, "")
}

// check health-checks a running instance; true while it has not yet been
// healthy and is within its deadline.
func (c *Converger) check(ctx context.Context, a instance.Assignment, obs runtime.Status) bool {
	in := a.Instance
	err := c.Probe(ctx, c.addr(in), a.HealthCheckPath)
	if err == nil {
		c.mu.Lock()
		delete(c.pullFailed, in.ID)
		c.mu.Unlock()
		if in.State != instance.StateHealthy {
			if in.RestartCount > 0 && in.State == instance.StateStarting {
				// Healthy again after a crash: the crash loop is over.
				if err := c.store().ResetRestarts(ctx, in.ID); err != nil {
					c.Log.WarnContext(ctx, "reset restart count", "instance_id", in.ID, "err", err)
				}
			}
			c.report(ctx, in, instance.StateHealthy, "")
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

func (c *Converger) crashed(ctx context.Context, in instance.Instance, obs runtime.Status, log *slog.Logger) {
	why := fmt.Sprintf("exited with code %d", obs.ExitCode)
	if obs.OOMKilled {
		why = fmt.Sprintf("killed for using more than its %d MiB of memory", in.MemoryMB)
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
	c.start(ctx, in, log)
}

func (c *Converger) stop(ctx context.Context, in instance.Instance, obs runtime.Status, log *slog.Logger) {
	if obs.State != runtime.StateMissing {
		if in.State != instance.StateStopping {
			c.report(ctx, in, instance.StateStopping, "")
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
	delete(c.pulls, in.ID)
	c.mu.Unlock()
	if in.Desired == instance.DesiredStopped && in.State != instance.StateStopped {
		c.report(ctx, in, instance.StateStopped, "")
	}
}

// environment decrypts the project's variables meant for the deployment's
// environment; they exist in plaintext only here, on their way into the
// instance. The filter is in the query, against the deployment's row, so
// that a preview's instance never even fetches a production-only secret.
func (c *Converger) environment(ctx context.Context, projectID, deploymentID uuid.UUID) (map[string]string, error) {
	vars, err := db.New(c.Pool).EnvironmentVariableListForDeployment(ctx, deploymentID)
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
