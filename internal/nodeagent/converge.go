package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/runtime"
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
	List() ([]network.Attachment, error)
	Check(ctx context.Context) (repaired bool, err error)
}

// ControlPlane is what the agent asks the control plane for: *Control.
type ControlPlane interface {
	Environment(ctx context.Context, instanceID uuid.UUID) (map[string]string, error)
	RegistryAuth(ctx context.Context) (*runtime.Auth, error)
}

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
	// PullTimeout bounds one pull from start to end; PullWait is how long
	// a pass waits for it. A pull still going after PullWait goes on in
	// the background, wakes the agent when it ends, and the next pass
	// picks up its result, so one slow or stalled registry never holds up
	// the other instances' convergence.
	PullTimeout, PullWait time.Duration
	// RegistryAuth is what the node pulls images with (read-only); nil:
	// the credential the control plane hands out, scoped to the projects
	// placed on the node, if it hands any out.
	RegistryAuth *runtime.Auth
	// HostNetwork runs instances in the node's network namespace instead
	// of their own (local tests without root only: no isolation).
	HostNetwork bool
	// PassWait is how long a pass waits for the steps it began (creates,
	// starts, health checks) before it returns; a step still going on
	// carries on, and later passes skip its instance until it is done.
	// Zero: a pass only begins steps, each of which reports what it did.
	PassWait time.Duration
	// StopWait is how long a pass waits for a stop it began (or one under
	// way) before it moves on; the stop goes on in the background and wakes
	// the agent when it is done. An app that ignores SIGTERM holds its stop
	// for the whole StopGrace, and a pass waiting for it would hold up
	// every other instance's start meanwhile.
	StopWait time.Duration
	// Parallel bounds how many creates and starts run at once (a create
	// is a network and a containerd create, a start a runc process and its
	// shim): beyond the machine's cores more only contend. Zero: 16.
	Parallel int
	// StartProbe is the wait between the probes of a just-started
	// instance (the first is at once, while "starting" is reported); it
	// doubles every four probes up to StartProbeMax. Most apps answer
	// within milliseconds of starting, long before the next pass would
	// look; zero probes at passes only.
	StartProbe, StartProbeMax time.Duration
}

// DefaultPolicy is what a production node runs with.
var DefaultPolicy = Policy{
	HealthDeadline: 60 * time.Second, StopGrace: 10 * time.Second,
	RestartBackoff: time.Second, MaxBackoff: time.Minute, MaxRestarts: 5, PullAttempts: 3,
	PullTimeout: 10 * time.Minute, PullWait: 250 * time.Millisecond, StopWait: 100 * time.Millisecond,
	StartProbe: 5 * time.Millisecond, StartProbeMax: 100 * time.Millisecond,
}

// Converger makes what runs on this node match the database.
type Converger struct {
	Pool    *pgxpool.Pool
	NodeID  uuid.UUID
	Runtime Runtime
	Network Network
	Probe   Prober
	// Control hands out instances' environments and the registry
	// credential (Control); nil: instances with variables cannot run here.
	Control ControlPlane
	Policy  Policy
	Log     *slog.Logger
	// Ready is called when a just-started instance first answers its
	// start probe (Policy.StartProbe), once that answer is reported, to
	// wake the agent; nil: no start probe, it waits for the next pass.
	Ready func()

	mu         sync.Mutex
	current    map[uuid.UUID]instance.Instance // as last read and reported: the node-proxy routes by it
	started    map[uuid.UUID]time.Time         // when the current run of an instance began
	retryAt    map[uuid.UUID]time.Time         // crashed: not before this
	pullFailed map[uuid.UUID]int
	pulls      map[uuid.UUID]*pull         // under way, or done and not yet looked at
	stops      map[uuid.UUID]chan struct{} // under way; closed when done
	busy       map[uuid.UUID]chan struct{} // a step under way; closed when it ends
	ended      map[uuid.UUID]time.Time     // when the last step ended
	slots      chan struct{}               // the pool of creates and starts
}

// store is this node's view of the instances table.
func (c *Converger) store() instance.Store { return instance.Store{DB: c.Pool, Node: c.NodeID} }

// Pass converges once: every instance of this node is looked at, and any
// that runs here without being wanted is stopped. It returns how many
// instances are still on their way (starting), so the caller can come
// back sooner.
func (c *Converger) Pass(ctx context.Context) (pending int, err error) {
	c.init()
	// The firewall is checked while the pass reads what is wanted and what
	// runs, and before anything is created: in sequence the three cost a
	// pass's latency on every instance start.
	checked := make(chan struct{})
	go func() { defer close(checked); c.checkFirewall(ctx) }()
	// A step that ends after this may not be in what the pass reads (a
	// create whose container the list below missed): its instance waits
	// for the next pass rather than be created twice.
	readAt := time.Now()
	want, err := c.store().ListAssigned(ctx)
	var have []runtime.Status
	if err == nil {
		if have, err = c.Runtime.List(ctx); err != nil {
			err = fmt.Errorf("list containers: %w", err)
		}
	}
	<-checked
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	prev := c.current
	c.current = make(map[uuid.UUID]instance.Instance, len(want))
	for _, a := range want {
		in := a.Instance
		// A step under way, or one that ended after the list was read (the
		// start probe's report of healthy), may have reported a newer state
		// than the list holds: keep it. Taking the list's would have the
		// node-proxy turn away an instance the operator already routes to
		// as healthy, until the next pass (503s through the edge in CI).
		_, busy := c.busy[a.ID]
		if p, ok := prev[a.ID]; ok && (busy || c.ended[a.ID].After(readAt)) {
			in.State, in.StateReason = p.State, p.StateReason
		}
		c.current[a.ID] = in
	}
	c.mu.Unlock()
	observed := make(map[uuid.UUID]runtime.Status, len(have))
	for _, s := range have {
		observed[s.InstanceID] = s
	}

	var (
		wanted  = make(map[uuid.UUID]bool, len(want))
		results = make(chan bool, len(want)+len(have))
		running int
		pendCnt int
	)
	// Each instance's step runs on its own, and the pass waits for the
	// steps up to Policy.PassWait only: a step still going on after that
	// (a create, a start, a stop's first moments) is left to finish, and
	// passes meanwhile skip its instance and count it pending. So an
	// instance assigned while fifty others are being created starts at
	// once, not after them. Creates and starts take turns for a place in
	// the pool (Policy.Parallel); checks and stops need none.
	for _, a := range stopsFirst(want) {
		wanted[a.ID] = true
		obs, ok := observed[a.ID]
		if !ok {
			obs = runtime.Status{InstanceID: a.ID, State: runtime.StateMissing}
		}
		if !c.claimStep(a.ID, readAt) {
			pendCnt++
			continue
		}
		running++
		go func() {
			p := c.converge(ctx, a, obs)
			c.stepDone(a.ID)
			results <- p
		}()
	}

	for _, s := range have {
		if wanted[s.InstanceID] {
			continue
		}
		// Running here but not wanted (its row is gone, stopped for good,
		// or moved): stop it. This is also how a restarted agent cleans up
		// after a stop it did not finish.
		if s.State != runtime.StateMissing {
			running++
			go func() { c.stopOrphan(ctx, s.InstanceID); results <- false }()
		}
	}
	patience := time.NewTimer(c.Policy.PassWait)
	defer patience.Stop()
wait:
	for ; running > 0; running-- {
		select {
		case p := <-results:
			if p {
				pendCnt++
			}
		case <-patience.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	pendCnt += running
	c.forgetSteps(readAt)
	c.sweepNetworks(ctx, want, have)
	return pendCnt, nil
}

func (c *Converger) init() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started == nil {
		c.started, c.retryAt, c.pullFailed = map[uuid.UUID]time.Time{}, map[uuid.UUID]time.Time{}, map[uuid.UUID]int{}
		c.pulls = map[uuid.UUID]*pull{}
		c.stops = map[uuid.UUID]chan struct{}{}
		c.busy, c.ended = map[uuid.UUID]chan struct{}{}, map[uuid.UUID]time.Time{}
		parallel := c.Policy.Parallel
		if parallel <= 0 {
			parallel = 16
		}
		c.slots = make(chan struct{}, parallel)
	}
}

// converge moves one instance one step; it reports whether the instance is
// still on its way to healthy.
func (c *Converger) converge(ctx context.Context, a instance.Assignment, obs runtime.Status) bool {
	in := a.Instance
	log := c.Log.With("instance_id", in.ID)
	if in.Desired == instance.DesiredStopped {
		c.stop(ctx, in, obs, log)
		return false
	}
	if in.State == instance.StateFailed {
		// Terminal: the operator replaces it. Make sure nothing lingers.
		if obs.State != runtime.StateMissing {
			c.stop(ctx, in, obs, log)
		}
		return false
	}

	switch obs.State {
	case runtime.StateMissing:
		c.create(ctx, a, log)
		return true
	case runtime.StateCreated:
		c.start(ctx, a, log)
		return true
	case runtime.StateRunning:
		return c.check(ctx, a, obs)
	case runtime.StateExited:
		c.crashed(ctx, a, obs, log)
		return true
	default:
		log.WarnContext(ctx, "instance in an unexpected state", "state", obs.State, "detail", obs.Detail)
		return false
	}
}

// report writes an observed state back, only when it changed.
func (c *Converger) report(ctx context.Context, in instance.Instance, state instance.State, reason string) {
	if in.State == state && in.StateReason == reason {
		return
	}
	if _, err := c.store().Report(ctx, in.ID, state, reason); err != nil {
		c.Log.WarnContext(ctx, "report state", "instance_id", in.ID, "state", state, "err", err)
		return
	}
	c.mu.Lock()
	if cur, ok := c.current[in.ID]; ok {
		cur.State, cur.StateReason = state, reason
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
	if !ok || in.Desired != instance.DesiredRunning {
		return netip.AddrPort{}, false, false
	}
	return c.addr(in), in.State == instance.StateHealthy, true
}

func (c *Converger) addr(in instance.Instance) netip.AddrPort {
	if c.Policy.HostNetwork {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(in.Port))
	}
	return in.AddrPort()
}

// stopsFirst orders want so that instances to stop come first: a pass
// begins their stops before it waits for a place in the pool.
func stopsFirst(want []instance.Assignment) []instance.Assignment {
	out := make([]instance.Assignment, 0, len(want))
	for _, a := range want {
		if a.Desired == instance.DesiredStopped || a.State == instance.StateFailed {
			out = append(out, a)
		}
	}
	for _, a := range want {
		if !(a.Desired == instance.DesiredStopped || a.State == instance.StateFailed) {
			out = append(out, a)
		}
	}
	return out
}

// slot waits for a place in the pool of creates and starts and returns its
// release; false if ctx ended first.
func (c *Converger) slot(ctx context.Context) (release func(), ok bool) {
	select {
	case c.slots <- struct{}{}:
		return func() { <-c.slots }, true
	case <-ctx.Done():
		return nil, false
	}
}

// claimStep marks a step of the instance under way, unless one is, or one
// ended after readAt (what the pass read may not show what it did).
func (c *Converger) claimStep(iid uuid.UUID, readAt time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.busy[iid]; busy || c.ended[iid].After(readAt) {
		return false
	}
	c.busy[iid] = make(chan struct{})
	return true
}

// awaitStep marks a step of the instance under way once none is: it waits
// for the one under way to end (and for any claimed before it could take
// its turn: each wait is one step's end). False if ctx ended first.
func (c *Converger) awaitStep(ctx context.Context, iid uuid.UUID) bool {
	for {
		c.mu.Lock()
		done, busy := c.busy[iid]
		if !busy {
			c.busy[iid] = make(chan struct{})
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return false
		}
	}
}

func (c *Converger) stepDone(iid uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if done, ok := c.busy[iid]; ok {
		close(done)
		delete(c.busy, iid)
	}
	c.ended[iid] = time.Now()
}

// forgetSteps drops the ends of steps that every later pass reads after.
func (c *Converger) forgetSteps(readAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for iid, t := range c.ended {
		if !t.After(readAt) {
			delete(c.ended, iid)
		}
	}
}

// Busy says whether a step of the instance is under way.
func (c *Converger) Busy(iid uuid.UUID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, busy := c.busy[iid]
	return busy
}
