package runtime

import (
	"context"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// enforceDiskLimit kills the running instances whose writable layer holds
// more than Config.DiskLimitMB, marking them so that Status says why. The
// layer is measured by the snapshotter (overlayfs walks the upper
// directory), so the bound is checked, not enforced by the kernel: an
// instance may pass it by what it writes in one LogCheckInterval.
func (r *Runtime) enforceDiskLimit(ctx context.Context) {
	limit := r.cfg.DiskLimitMB << 20
	ctrs, err := r.client.ContainerService().List(ctx, r.ownedFilter())
	if err != nil {
		r.log.WarnContext(ctx, "list instances for the disk bound", "error", err)
		return
	}
	for _, info := range ctrs {
		if info.SnapshotKey == "" || info.Labels[labelDisk] != "" {
			continue
		}
		usage, err := r.client.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				r.log.WarnContext(ctx, "measure an instance's writable layer", "container", info.ID, "error", err)
			}
			continue
		}
		if usage.Size <= limit {
			continue
		}
		ctr, err := r.client.LoadContainer(ctx, info.ID)
		if err != nil {
			continue
		}
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue // not running: nothing is writing
		}
		if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
			continue
		}
		// The mark first: the agent sees the exit and must find why.
		if _, err := ctr.SetLabels(ctx, map[string]string{labelDisk: time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
			r.log.WarnContext(ctx, "mark an instance over its disk bound", "container", info.ID, "error", err)
			continue
		}
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			r.log.WarnContext(ctx, "kill an instance over its disk bound", "container", info.ID, "error", err)
			continue
		}
		r.log.InfoContext(ctx, "instance killed for writing more than its disk bound",
			"container", info.ID, "written_bytes", usage.Size, "limit_bytes", limit)
	}
}
