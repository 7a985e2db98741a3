package bootstrap

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/scheduler"
)

// DrainMarker says, on a worker, whether bootstrap drained it: "drained
// <node id>" from the drain until the undrain, "undrained" after. A run
// killed in between leaves the node draining with this marker, and the
// next run finishes the rollout and undrains it; a node drained by a
// person (no marker of ours) is upgraded and left draining.
const DrainMarker = "/var/lib/zeitwork/bootstrap/drain"

var undrainedMarker = []byte("undrained\n")

// Rollout restarts the units of nodes that already run, one node at a
// time, so that the cluster keeps serving while a newer binary or
// configuration is rolled out. A worker is drained first and waited on
// until the operators have moved its instances and their replacements are
// healthy, because restarting the agent takes its node-proxy down with it;
// then it is restarted, waited on until the new agent heartbeats, and
// undrained. An operator is restarted and waited on until it is alive
// again before the next one goes. Every wait is bounded and its error
// names the node.
type Rollout struct {
	Pool *pgxpool.Pool
	Out  io.Writer
	// Wait bounds each wait; 0: 10m. Poll is how often it looks; 0: 2s.
	Wait, Poll time.Duration
}

// Worker rolls units (the node agent's among them) out to the worker whose
// agent registers as agentAddress. marker is what AppliedMarker must hold
// once the units run what they must; when it already does, the worker
// only needs the rest of an interrupted rollout (its undrain).
func (r Rollout) Worker(ctx context.Context, name, agentAddress string, h Host, units []string, marker []byte) error {
	rn, ok, err := r.nodeAt(ctx, agentAddress)
	if err != nil {
		return err
	}
	if !ok || rn.Status == node.StatusDead {
		// Nothing to drain: the node never registered or its agent is
		// already gone, and its instances were moved when it was declared
		// dead.
		return r.restart(ctx, h, units, marker)
	}
	ours, err := drainedByUs(ctx, h)
	if err != nil {
		return err
	}
	// A node someone else drained stays drained: it is upgraded all the
	// same, and undraining it is their call.
	keep := rn.Status == node.StatusDraining && !ours
	started := time.Now()
	if rn.Status != node.StatusDraining {
		// The marker first: a run killed right after the drain must know
		// the drain is its own to undo.
		if _, err := h.Install(ctx, DrainMarker, []byte("drained "+rn.ID.String()+"\n"), 0o644); err != nil {
			return err
		}
		if _, err := (node.Store{DB: r.Pool}).SetStatus(ctx, rn.ID, node.StatusDraining); err != nil {
			return fmt.Errorf("%s: drain: %w", name, err)
		}
	}
	r.progress(name, "draining node %s: the operators move its instances away", rn.ID)
	var moved movedState
	err = r.waitFor(ctx, name, "its instances to move and their replacements to be healthy", func(ctx context.Context) (bool, string, error) {
		var err error
		moved, err = r.moved(ctx, rn.ID)
		if err != nil {
			return false, "", err
		}
		return moved.done(), moved.String(), nil
	})
	if err != nil {
		return err
	}
	r.progress(name, "%s (%s)", moved, time.Since(started).Round(time.Millisecond))

	current, err := runsMarker(ctx, h, units, marker)
	if err != nil {
		return err
	}
	if !current {
		if err := r.restart(ctx, h, units, marker); err != nil {
			return fmt.Errorf("%s: restart: %w", name, err)
		}
	}
	// Read after the restart: the old agent is gone by then, so a later
	// heartbeat is the new one's.
	before, err := (node.Store{DB: r.Pool}).Get(ctx, rn.ID)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	restarted := time.Now()
	err = r.waitFor(ctx, name, "its agent to heartbeat again", func(ctx context.Context) (bool, string, error) {
		n, err := (node.Store{DB: r.Pool}).Get(ctx, rn.ID)
		if err != nil {
			return false, "", err
		}
		return n.LastHeartbeatAt.After(before.LastHeartbeatAt) && n.Status != node.StatusDead,
			fmt.Sprintf("last heartbeat %s ago, %s", time.Since(n.LastHeartbeatAt).Round(time.Second), n.Status), nil
	})
	if err != nil {
		return err
	}
	r.progress(name, "agent restarted and heartbeating (%s)", time.Since(restarted).Round(time.Millisecond))
	if keep {
		r.progress(name, "left draining: it was drained before this run")
		return nil
	}
	if _, err := (node.Store{DB: r.Pool}).SetStatus(ctx, rn.ID, node.StatusActive); err != nil {
		return fmt.Errorf("%s: undrain: %w", name, err)
	}
	if _, err := h.Install(ctx, DrainMarker, undrainedMarker, 0o644); err != nil {
		return err
	}
	r.progress(name, "undrained: it takes instances again")
	return nil
}

// Operator restarts an operator's units and waits until an operator
// process on the node, one not alive before, heartbeats: the next one is
// only restarted once this one works its loops again.
func (r Rollout) Operator(ctx context.Context, name, address string, h Host, units []string, marker []byte) error {
	return r.restartingOperator(ctx, name, address, func() error {
		if err := r.restart(ctx, h, units, marker); err != nil {
			return fmt.Errorf("%s: restart: %w", name, err)
		}
		return nil
	})
}

// restartingOperator runs restart (which restarts the operator at
// address, among other things) and waits for the new operator.
func (r Rollout) restartingOperator(ctx context.Context, name, address string, restart func() error) error {
	before, err := db.New(r.Pool).OperatorListAlive(ctx, time.Now().Add(-operatorAlive))
	if err != nil {
		return fmt.Errorf("%s: read operators: %w", name, err)
	}
	if err := restart(); err != nil {
		return err
	}
	restarted := time.Now()
	err = r.waitFor(ctx, name, "its operator to register again", func(ctx context.Context) (bool, string, error) {
		alive, err := db.New(r.Pool).OperatorListAlive(ctx, time.Now().Add(-operatorAlive))
		if err != nil {
			return false, "", err
		}
		for _, o := range alive {
			if o.Address == address && !slices.ContainsFunc(before, func(b db.Operator) bool { return b.ID == o.ID }) {
				return true, "", nil
			}
		}
		return false, "no new operator at " + address + " yet", nil
	})
	if err != nil {
		return err
	}
	r.progress(name, "operator alive again (%s after the restart)", time.Since(restarted).Round(time.Millisecond))
	return nil
}

// healthCheck is a role's health endpoint, asked from its node.
type healthCheck struct{ role, url string }

// healthChecks are the endpoints a rollout waits on after restarting the
// node's units: the api's /v1/health, and the builder's (the builder has
// no row that heartbeats; its endpoint answers once it works its queue).
// Operators and workers are waited on through the database instead.
func healthChecks(n Node) []healthCheck {
	var hc []healthCheck
	if n.Has(RoleAPI) {
		hc = append(hc, healthCheck{"api", "http://" + net.JoinHostPort("127.0.0.1", APIPort) + "/v1/health"})
	}
	if n.Has(RoleBuilder) {
		hc = append(hc, healthCheck{"builder", "http://" + BuilderHealthAddr + "/v1/health"})
	}
	return hc
}

// Serving waits, after a node's units were (re)started, until each of its
// health endpoints answers 200, one bounded wait each. Any 200 is the new
// process's: systemctl restart returns only once the old one has exited
// (the unit's stop waits for its whole cgroup), so nothing else is left to
// answer on the port. The version the body reports is printed, not
// compared: a rollout of configuration alone keeps the version.
func (r Rollout) Serving(ctx context.Context, name string, h Host, checks []healthCheck) error {
	for _, c := range checks {
		began := time.Now()
		var version string
		err := r.waitFor(ctx, name, "its "+c.role+" to answer GET "+c.url+" with 200", func(ctx context.Context) (bool, string, error) {
			code, body, err := h.Get(ctx, c.url)
			if err != nil {
				return false, "", err
			}
			if code != http.StatusOK {
				return false, fmt.Sprintf("HTTP %d: %s", code, bytes.TrimSpace(body)), nil
			}
			var b struct {
				Version string `json:"version"`
			}
			if json.Unmarshal(body, &b) == nil {
				version = b.Version
			}
			return true, "", nil
		})
		if err != nil {
			return err
		}
		r.progress(name, "%s answers /v1/health, version %s (waited %s)", c.role, cmp.Or(version, "unknown"), time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// answers says whether c's endpoint answers 200 now, and if not, why.
func answers(ctx context.Context, h Host, c healthCheck) (bool, string) {
	code, body, err := h.Get(ctx, c.url)
	switch {
	case err != nil:
		return false, err.Error()
	case code != http.StatusOK:
		return false, fmt.Sprintf("HTTP %d: %s", code, bytes.TrimSpace(body))
	}
	return true, ""
}

// LeftDraining says whether a worker is still drained by a rollout that
// did not finish.
func (r Rollout) LeftDraining(ctx context.Context, agentAddress string, h Host) (bool, error) {
	rn, ok, err := r.nodeAt(ctx, agentAddress)
	if err != nil || !ok || rn.Status != node.StatusDraining {
		return false, err
	}
	return drainedByUs(ctx, h)
}

// restart restarts the units and records what they now run.
func (r Rollout) restart(ctx context.Context, h Host, units []string, marker []byte) error {
	if err := h.Restart(ctx, units); err != nil {
		return err
	}
	_, err := h.Install(ctx, AppliedMarker, marker, 0o644)
	return err
}

// runsMarker: the units run and were started with what marker records.
func runsMarker(ctx context.Context, h Host, units []string, marker []byte) (bool, error) {
	stopped, err := h.Stopped(ctx, units)
	if err != nil || len(stopped) > 0 {
		return false, err
	}
	have, err := h.SHA256s(ctx, []string{AppliedMarker})
	if err != nil {
		return false, err
	}
	return have[0] == digest(marker), nil
}

func drainedByUs(ctx context.Context, h Host) (bool, error) {
	// The host interface compares digests, not contents: "drained <id>"
	// is told from "undrained" (or nothing) by elimination.
	have, err := h.SHA256s(ctx, []string{DrainMarker})
	if err != nil {
		return false, err
	}
	return have[0] != "" && have[0] != digest(undrainedMarker), nil
}

func (r Rollout) nodeAt(ctx context.Context, agentAddress string) (node.Node, bool, error) {
	ns, err := (node.Store{DB: r.Pool}).List(ctx)
	if errors.Is(notMigrated(err), errNotMigrated) {
		return node.Node{}, false, nil
	}
	if err != nil {
		return node.Node{}, false, err
	}
	i := slices.IndexFunc(ns, func(n node.Node) bool { return n.InternalAddress == agentAddress })
	if i < 0 {
		return node.Node{}, false, nil
	}
	return ns[i], true, nil
}

// movedState is where a draining node's instances are.
type movedState struct {
	// leaving are instances of active deployments still on the node
	// (stopped ones have left); short are the active deployments that
	// had instances here and do not yet have their count of healthy
	// instances elsewhere.
	leaving, short int
	// staying are instances of deployments that are not active (previews
	// of older ones, a deployment still rolling out): the operators move
	// only active deployments, so they are not waited for.
	staying int
}

func (m movedState) done() bool { return m.leaving == 0 && m.short == 0 }

func (m movedState) String() string {
	var s string
	if m.done() {
		s = "its instances of active deployments have moved and their replacements are healthy"
	} else {
		s = fmt.Sprintf("%d instances of active deployments still on it, %d deployments short of healthy instances elsewhere", m.leaving, m.short)
	}
	if m.staying > 0 {
		s += fmt.Sprintf("; %d instances of deployments that are not active stay", m.staying)
	}
	return s
}

// moved reads where the instances of a draining node are.
func (r Rollout) moved(ctx context.Context, nodeID uuid.UUID) (movedState, error) {
	var m movedState
	ins, err := instance.Store{DB: r.Pool}.List(ctx, instance.Filter{NodeID: &nodeID, Limit: 100000})
	if err != nil {
		return m, err
	}
	deps := map[uuid.UUID]deployment.Deployment{}
	for _, in := range ins {
		dep, ok := deps[in.DeploymentID]
		if !ok {
			if dep, err = (deployment.Store{DB: r.Pool}).Get(ctx, in.DeploymentID); err != nil {
				return m, err
			}
			// Also the deployments whose instances here have stopped:
			// each must be whole elsewhere.
			deps[in.DeploymentID] = dep
		}
		if in.State == instance.StateStopped || in.State == instance.StateFailed {
			continue
		}
		if dep.Status != deployment.StatusActive {
			m.staying++
			continue
		}
		m.leaving++
	}
	for _, dep := range deps {
		if dep.Status != deployment.StatusActive {
			continue
		}
		live, err := instance.Store{DB: r.Pool}.ListLive(ctx, dep.ID)
		if err != nil {
			return m, err
		}
		healthy := 0
		for _, in := range live {
			if in.NodeID != nodeID && in.State == instance.StateHealthy {
				healthy++
			}
		}
		if healthy < max(int(dep.Replicas), scheduler.MinReplicas) {
			m.short++
		}
	}
	return m, nil
}

// waitFor polls cond until it holds, for at most r.Wait. cond gets the
// run's context, not one cut at the deadline: the error then says what
// was last seen, not that a query was cancelled.
func (r Rollout) waitFor(ctx context.Context, name, what string, cond func(context.Context) (bool, string, error)) error {
	wait, poll := cmp.Or(r.Wait, 10*time.Minute), cmp.Or(r.Poll, 2*time.Second)
	deadline := time.Now().Add(wait)
	for {
		ok, detail, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: waiting for %s: %w", name, what, ctx.Err())
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New(detail)
			}
			return fmt.Errorf("%s: gave up after %v waiting for %s: %w", name, wait, what, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

// progress prints a line under the step being applied.
func (r Rollout) progress(name, format string, args ...any) {
	if r.Out == nil {
		return
	}
	var line bytes.Buffer
	fmt.Fprintf(&line, "      %s: ", name)
	fmt.Fprintf(&line, format, args...)
	fmt.Fprintln(r.Out, strings.TrimRight(line.String(), " "))
}

// rollOut restarts the units of a node that runs, waiting on what the
// database shows of its roles: a worker drained around its restart, an
// operator until it is alive again.
func (r Rollout) rollOut(ctx context.Context, n Node, h Host, units []string, marker []byte) error {
	switch {
	case n.Has(RoleWorker) && n.Has(RoleOperator):
		current, err := runsMarker(ctx, h, units, marker)
		if err != nil {
			return err
		}
		if current {
			// Only the undrain was left: the operator already
			// runs what it must.
			return r.Worker(ctx, n.Name, n.AgentAddress(), h, units, marker)
		}
		return r.restartingOperator(ctx, n.Name, net.JoinHostPort(n.InternalAddress, ManagementPort), func() error {
			return r.Worker(ctx, n.Name, n.AgentAddress(), h, units, marker)
		})
	case n.Has(RoleWorker):
		return r.Worker(ctx, n.Name, n.AgentAddress(), h, units, marker)
	case n.Has(RoleOperator):
		return r.Operator(ctx, n.Name, net.JoinHostPort(n.InternalAddress, ManagementPort), h, units, marker)
	default:
		return r.restart(ctx, h, units, marker)
	}
}

// startStep starts a node's units, or, when they already run something
// else, rolls the new binary and configuration out to it: a worker
// drained and undrained around its restart, an operator waited on until it
// is alive again. Nodes are stepped through one at a time, so no two
// workers are ever drained, and no two operators down, at once.
func (b *Bootstrap) startStep(n Node, h Host, units []string, marker []byte) Step {
	r := Rollout{Pool: b.pool, Out: b.Out, Wait: b.Wait, Poll: b.Poll}
	how := "restart"
	switch {
	case n.Has(RoleWorker):
		how = "roll out: drain, let its instances move, restart, undrain"
	case n.Has(RoleOperator):
		how = "restart, then wait until its operator is alive"
	}
	checks := healthChecks(n)
	for _, c := range checks {
		then := ", then until its "
		if how == "restart" {
			then = ", then wait until its "
		}
		how += then + c.role + " answers /v1/health"
	}
	return Step{
		Name: n.Name + ": start " + strings.Join(units, " "),
		Check: func(ctx context.Context) (Status, error) {
			stopped, err := h.Stopped(ctx, units)
			if err != nil {
				return Status{}, err
			}
			if len(stopped) > 0 {
				return Status{Detail: "not running: " + strings.Join(stopped, " ")}, nil
			}
			current, err := runsMarker(ctx, h, units, marker)
			if err != nil {
				return Status{}, err
			}
			if !current {
				return Status{Detail: "running, but not with this binary and configuration: to " + how}, nil
			}
			if n.Has(RoleWorker) {
				left, err := r.LeftDraining(ctx, n.AgentAddress(), h)
				if err != nil {
					return Status{}, err
				}
				if left {
					return Status{Detail: "left draining by a rollout that did not finish: to finish it and undrain"}, nil
				}
			}
			// Running is not enough for the roles that say whether they
			// serve: one that does not is restarted (and waited on).
			for _, c := range checks {
				if ok, detail := answers(ctx, h, c); !ok {
					return Status{Detail: "running, but its " + c.role + " does not answer /v1/health (" + detail + "): to " + how}, nil
				}
			}
			return Status{Done: true, Detail: "running"}, nil
		},
		Apply: func(ctx context.Context) error {
			stopped, err := h.Stopped(ctx, units)
			if err != nil {
				return err
			}
			left := false
			if n.Has(RoleWorker) {
				if left, err = r.LeftDraining(ctx, n.AgentAddress(), h); err != nil {
					return err
				}
			}
			if len(stopped) > 0 && !left {
				// Not running (a new or wiped machine): nothing serves
				// from it that a restart could interrupt.
				err = r.restart(ctx, h, units, marker)
			} else {
				err = r.rollOut(ctx, n, h, units, marker)
			}
			if err != nil {
				return err
			}
			// The next node goes only once this one serves (again).
			return r.Serving(ctx, n.Name, h, checks)
		},
	}
}
