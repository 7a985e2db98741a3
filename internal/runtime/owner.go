package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"
)

// labelOwner marks a container as created by the Runtime whose
// Config.Owner it carries. A namespace is not a boundary anyone enforces:
// two platforms on one machine (tests next to `zeitwork dev`) may well
// share one, and an agent that adopted or garbage-collected every container
// there would kill the other's instances. So the Runtime treats a container
// without its owner label as if it did not exist.
const labelOwner = "dev.zeitwork.owner"

func (r *Runtime) owns(info containers.Container) bool {
	return info.Labels[labelOwner] == r.cfg.Owner
}

// ownedFilter selects this Runtime's instances in a container listing.
func (r *Runtime) ownedFilter() string {
	return fmt.Sprintf("labels.%q,labels.%q==%q", labelInstance, labelOwner, r.cfg.Owner)
}

// load returns the container named id if this Runtime owns it; a foreign
// one is reported as not found, like a missing one, so that no caller can
// act on it by mistake.
func (r *Runtime) load(ctx context.Context, id string) (client.Container, error) {
	ctr, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return nil, err
	}
	if !r.owns(info) {
		return nil, fmt.Errorf("container %s belongs to %q, not %q: %w", id, info.Labels[labelOwner], r.cfg.Owner, errdefs.ErrNotFound)
	}
	return ctr, nil
}

// foreign reports whether container id exists and is not this Runtime's.
// A container that is gone cannot be told apart, and is not foreign.
func (r *Runtime) foreign(ctx context.Context, id string) bool {
	info, err := r.client.ContainerService().Get(ctx, id)
	return err == nil && !r.owns(info)
}
