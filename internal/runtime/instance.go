package runtime

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// Container labels: all the state the Runtime keeps, kept in containerd so
// that a restarted agent reads it back.
const (
	labelInstance  = "dev.zeitwork.instance"
	labelSpecHash  = "dev.zeitwork.spec-hash"
	labelStartedAt = "dev.zeitwork.started-at"
	labelOOM       = "dev.zeitwork.oom"
	labelDisk      = "dev.zeitwork.disk"
)

// killTimeout bounds the wait for a SIGKILLed task to be reaped; past it
// something is wrong below us (a stuck shim) and Stop says so.
const killTimeout = 10 * time.Second

// Create makes the instance's container and its root filesystem from an
// image already pulled, with the configured runtime handler. It does not
// start anything: Start does. Creating an instance that exists is
// ErrExists, whatever its spec; the caller compares Status.SpecHash and
// stops the old one first.
func (r *Runtime) Create(ctx context.Context, s Spec) (err error) {
	if err := s.Validate(); err != nil {
		return err
	}
	ctx = r.ns(ctx)
	id := s.InstanceID.String()
	img, err := r.client.GetImage(ctx, s.Image)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("create %s: %w: %s", id, ErrImageNotPulled, s.Image)
		}
		return fmt.Errorf("create %s: image %s: %w", id, s.Image, err)
	}
	if ctr, err := r.client.LoadContainer(ctx, id); err == nil {
		// Another owner's container is invisible to Status and List, so say
		// whose it is: otherwise "exists" contradicts "missing".
		if info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata); err == nil && !r.owns(info) {
			return fmt.Errorf("create %s: %w, owned by %q", id, ErrExists, info.Labels[labelOwner])
		}
		return fmt.Errorf("create %s: %w", id, ErrExists)
	}
	// Pulled for another snapshotter (the node's configuration changed)?
	// Unpack here rather than fail: the content is local already. With
	// user namespaces nothing is unpacked as the node's root: create
	// re-owns the layers that are not yet (see remap.go).
	if !r.userNS {
		if ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter); err == nil && !ok {
			if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
				return fmt.Errorf("create %s: unpack %s: %w", id, s.Image, err)
			}
		}
	}

	return r.create(ctx, s, img)
}

// create makes the instance's snapshot and container record.
func (r *Runtime) create(ctx context.Context, s Spec, img client.Image) (err error) {
	id := s.InstanceID.String()
	// The snapshot is made before the container that will own it. A lease
	// holds it meanwhile, so a failure leaves nothing behind: deleting the
	// lease lets containerd's GC take the orphan, at once (synchronously)
	// so that a retry does not find the old snapshot in its way.
	lease, err := r.client.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return fmt.Errorf("create %s: lease: %w", id, err)
	}
	defer func() {
		var opts []leases.DeleteOpt
		if err != nil {
			opts = append(opts, leases.SynchronousDelete)
		}
		if derr := r.client.LeasesService().Delete(context.WithoutCancel(ctx), lease, opts...); derr != nil {
			r.log.WarnContext(ctx, "delete lease", "instance_id", id, "error", derr)
		}
	}()
	lctx := leases.WithLease(ctx, lease.ID)

	var runtimeOpts any
	if r.cfg.RuntimeConfigPath != "" {
		runtimeOpts = &runtimeoptions.Options{ConfigPath: r.cfg.RuntimeConfigPath}
	}
	h := r.hardening()
	snapshot := client.WithNewSnapshot(id, img)
	if h.userNS {
		// The image's files must belong to the mapped range, or root in
		// the instance would see them as nobody's: see remap.go.
		snapshot = r.withRemappedSnapshot(id, img, h.uidBase)
	}
	_, err = r.client.NewContainer(lctx, id,
		client.WithImage(img),
		client.WithSnapshotter(r.cfg.Snapshotter),
		snapshot,
		client.WithRuntime(r.cfg.RuntimeHandler, runtimeOpts),
		client.WithContainerLabels(lo.Assign(map[string]string{
			labelInstance: id,
			labelOwner:    r.cfg.Owner,
			labelSpecHash: s.Hash(),
		}, h.boostLabels(s))),
		client.WithImageStopSignal(img, "SIGTERM"),
		client.WithNewSpec(s.specOpts(img, h)...),
	)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", id, ErrExists)
		}
		return fmt.Errorf("create %s: %w", id, err)
	}
	r.log.InfoContext(ctx, "instance created", "instance_id", id, "image", s.Image)
	return nil
}

// logIO is where the instance's output goes: through the log writer,
// which bounds the file as it writes, or straight into the file.
func (r *Runtime) logIO(id uuid.UUID) cio.Creator {
	if r.cfg.LogWriter == LogWriterNone {
		return cio.LogFile(r.logPath(id))
	}
	w := r.cfg.LogWriter
	if r.cfg.logWriterBeside {
		w = logwriter.Beside(w)
	}
	return cio.BinaryIO(w, map[string]string{logwriter.Arg: logwriter.Spec(r.cfg.LogMaxBytes, r.logPath(id))})
}

// Start starts a created instance, or restarts one whose process has
// exited (the crashed-instance case: same container, same filesystem, its
// log continues). Starting a running instance does nothing.
//
// The process's stdout and stderr go straight from the shim into the
// instance's log file, so neither depends on the agent being alive.
func (r *Runtime) Start(ctx context.Context, id uuid.UUID) error {
	ctx = r.ns(ctx)
	ctr, err := r.load(ctx, id.String())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("start %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("start %s: %w", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
		task = nil
	case err != nil:
		return fmt.Errorf("start %s: %w", id, err)
	default:
		st, err := task.Status(ctx)
		if err != nil {
			return fmt.Errorf("start %s: task status: %w", id, err)
		}
		switch st.Status {
		case client.Running, client.Paused, client.Pausing:
			return nil
		case client.Stopped:
			// A process that ended is replaced by a new one; its OOM and
			// disk marks belonged to the old one.
			if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("start %s: remove exited task: %w", id, err)
			}
			if _, err := ctr.SetLabels(ctx, map[string]string{labelOOM: "", labelDisk: "", labelStartedAt: ""}); err != nil {
				return fmt.Errorf("start %s: %w", id, err)
			}
			task = nil
		}
	}
	if task == nil {
		task, err = ctr.NewTask(ctx, r.logIO(id))
		if err != nil {
			return fmt.Errorf("start %s with runtime %s: %w", id, r.cfg.RuntimeHandler, err)
		}
	}
	if err := task.Start(ctx); err != nil {
		// Leave no half-started task: the instance stays "created", and a
		// later Start tries afresh.
		if _, derr := task.Delete(context.WithoutCancel(ctx), client.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			r.log.WarnContext(ctx, "remove task that failed to start", "instance_id", id, "error", derr)
		}
		return fmt.Errorf("start %s: %w", id, err)
	}
	now := time.Now()
	labels := map[string]string{labelStartedAt: now.UTC().Format(time.RFC3339Nano)}
	if info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata); err == nil {
		labels = lo.Assign(labels, r.boostStartLabels(info, now))
	}
	if _, err := ctr.SetLabels(ctx, labels); err != nil {
		r.log.WarnContext(ctx, "record start time", "instance_id", id, "error", err)
	}
	r.log.InfoContext(ctx, "instance started", "instance_id", id, "pid", task.Pid())
	return nil
}

// Stop ends the instance and removes it: its stop signal (the image's
// STOPSIGNAL, SIGTERM by default), up to grace for it to exit, SIGKILL,
// then the task, the container and its filesystem are deleted. The log
// files stay, for LogRetention. Stopping an instance that does not exist,
// or that another owner created, is not an error and does nothing.
func (r *Runtime) Stop(ctx context.Context, id uuid.UUID, grace time.Duration) error {
	ctx = r.ns(ctx)
	ctr, err := r.load(ctx, id.String()) // another owner's container is not ours to stop
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("stop %s: %w", id, err)
	default:
		if err := r.endTask(ctx, ctr, task, grace); err != nil {
			return fmt.Errorf("stop %s: %w", id, err)
		}
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("stop %s: delete task: %w", id, err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: delete container: %w", id, err)
	}
	r.log.InfoContext(ctx, "instance stopped", "instance_id", id)
	return nil
}

func (r *Runtime) endTask(ctx context.Context, ctr client.Container, task client.Task, grace time.Duration) error {
	st, err := task.Status(ctx)
	if err != nil {
		return fmt.Errorf("task status: %w", err)
	}
	if st.Status == client.Stopped {
		return nil
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	if st.Status == client.Running && grace > 0 {
		sig, err := client.GetStopSignal(ctx, ctr, syscall.SIGTERM)
		if err != nil {
			sig = syscall.SIGTERM
		}
		if err := task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("signal %v: %w", sig, err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-exited:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	t := time.NewTimer(killTimeout)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-t.C:
		return errors.New("task did not exit within " + killTimeout.String() + " of SIGKILL")
	case <-ctx.Done():
		return ctx.Err()
	}
}
