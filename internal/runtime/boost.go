package runtime

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// An instance's start is mostly CPU: runc's init runs in the instance's
// cgroup, then the app loads its code. Under a small limit that time is
// stretched tenfold (a Node.js server's first answer here: 280–470 ms at
// 100m, 35–55 ms at 1000m), so a deploy, a restart after a crash or a
// scale-up waits on the limit rather than on the app. As Cloud Run's
// startup CPU boost does, an instance may use up to StartBoostCPUMillis
// for StartBoost after each start; then its own limit applies. The boost
// is in the container's spec, so runc creates the cgroup with it (an
// update before the start would cost a runc call on every start), and the
// Runtime lowers it with one update when it is due: labelBoostUntil says
// when, so a Runtime started after an agent restart lowers what its
// predecessor left boosted, and labelBoostEnded which boost was lowered
// (a start that comes while one is being lowered sets a new deadline, and
// is not mistaken for the one that ended).
const (
	labelCPUMillis  = "dev.zeitwork.cpu-millis"  // the Spec's CPUMillis, of a boosted instance
	labelBoostUntil = "dev.zeitwork.boost-until" // when the last start's boost ends
	labelBoostEnded = "dev.zeitwork.boost-ended" // the boost-until that was lowered
)

// boostTick is how often due boosts are looked for, while any may be.
const boostTick = 250 * time.Millisecond

// boostCPU is the boost's CPU limit, 0 for none. Not with Kata: the CPU
// quota sizes its microVM, and the guest's cgroup is Kata's.
func (r *Runtime) boostCPU() int {
	if r.cfg.StartBoost <= 0 || r.cfg.RuntimeHandler == HandlerKata {
		return 0
	}
	return r.cfg.StartBoostCPUMillis
}

// boostMillis is the CPU limit s starts with: its own, or the boost's when
// that is higher.
func (h hardening) boostMillis(s Spec) int {
	if s.CPUMillis > 0 && h.boostCPU > s.CPUMillis {
		return h.boostCPU
	}
	return 0
}

// boostLabels are the labels that mark instance s as started boosted at
// create.
func (h hardening) boostLabels(s Spec) map[string]string {
	if h.boostMillis(s) == 0 {
		return nil
	}
	return map[string]string{labelCPUMillis: strconv.Itoa(s.CPUMillis)}
}

// boostStartLabels are the labels Start sets on a container it started:
// when its boost ends, if it has one.
func (r *Runtime) boostStartLabels(info containers.Container, now time.Time) map[string]string {
	if _, boosted := info.Labels[labelCPUMillis]; !boosted {
		return nil
	}
	r.boosts.Add(1)
	return map[string]string{labelBoostUntil: now.Add(r.cfg.StartBoost).UTC().Format(time.RFC3339Nano)}
}

// boostLoop lowers boosts when they are due, for the Runtime's life.
func (r *Runtime) boostLoop(ctx context.Context) {
	t := time.NewTicker(boostTick)
	defer t.Stop()
	for {
		r.endBoosts(ctx, time.Now())
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// endBoosts lowers every boost due by now. r.boosts counts the starts
// since the last look that found none left: with none, no call is made.
func (r *Runtime) endBoosts(ctx context.Context, now time.Time) {
	seen := r.boosts.Load()
	if seen == 0 {
		return
	}
	infos, err := r.client.ContainerService().List(ctx, r.ownedFilter()+fmt.Sprintf(",labels.%q", labelBoostUntil))
	if err != nil {
		r.log.WarnContext(ctx, "list boosted instances", "error", err)
		return
	}
	left := false
	for _, info := range infos {
		deadline := info.Labels[labelBoostUntil]
		if info.Labels[labelBoostEnded] == deadline {
			continue
		}
		until, err := time.Parse(time.RFC3339Nano, deadline)
		if err == nil && now.Before(until) {
			left = true
			continue
		}
		if err := r.endBoost(ctx, info); err != nil {
			r.log.WarnContext(ctx, "end an instance's start boost", "instance_id", info.ID, "error", err)
			left = true
		}
	}
	if !left {
		r.boosts.CompareAndSwap(seen, 0)
	}
}

// endBoost sets the instance's own CPU limit on its running task, if it
// has one, and marks the boost ended.
func (r *Runtime) endBoost(ctx context.Context, info containers.Container) error {
	millis, err := strconv.Atoi(info.Labels[labelCPUMillis])
	if err != nil || millis <= 0 {
		return fmt.Errorf("label %s is %q", labelCPUMillis, info.Labels[labelCPUMillis])
	}
	ctr, err := r.client.LoadContainer(ctx, info.ID)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		// A process that ended has nothing to lower (runc refuses to
		// update it); its next start is boosted afresh.
		if st, err := task.Status(ctx); err == nil && st.Status != client.Stopped {
			quota, period := int64(millis)*cfsPeriod/1000, uint64(cfsPeriod)
			// Only the CPU limit: runc leaves what an update does not name.
			err := task.Update(ctx, client.WithResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}))
			if err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("update the task's CPU limit: %w", err)
			}
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	_, err = ctr.SetLabels(ctx, map[string]string{labelBoostEnded: info.Labels[labelBoostUntil]})
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}
