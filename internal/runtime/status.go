package runtime

import (
	"context"
	"fmt"
	"strings"
	"time"

	cgroup1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/services/tasks/v1"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/google/uuid"
)

// State is what containerd says about an instance.
type State string

const (
	// StateMissing: no such instance of this owner in the namespace.
	StateMissing State = "missing"
	// StateCreated: the container exists, its process has not been started,
	// or its start failed, or it vanished with a reboot of the node: Start
	// it.
	StateCreated State = "created"
	// StateRunning: its process is running.
	StateRunning State = "running"
	// StateExited: its process ended; ExitCode and OOMKilled say how.
	StateExited State = "exited"
	// StateUnknown: containerd reports something else (paused, or the shim
	// cannot be reached); Detail says what.
	StateUnknown State = "unknown"
)

// Status is one instance as containerd runs it.
type Status struct {
	InstanceID     uuid.UUID
	State          State
	PID            uint32 // 0 unless running
	ExitCode       uint32 // when exited; 137 after SIGKILL, OOM kill included
	OOMKilled      bool   // when exited: the kernel killed it for memory
	DiskKilled     bool   // when exited: killed for writing more than Config.DiskLimitMB
	StartedAt      time.Time
	ExitedAt       time.Time
	SpecHash       string // Spec.Hash() it was created from
	Image          string
	RuntimeHandler string
	Detail         string // for StateUnknown
}

// Status reports one instance. A missing instance is StateMissing, not an
// error; errors are for containerd itself failing.
func (r *Runtime) Status(ctx context.Context, id uuid.UUID) (Status, error) {
	ctx = r.ns(ctx)
	info, err := r.client.ContainerService().Get(ctx, id.String())
	if errdefs.IsNotFound(err) || err == nil && !r.owns(info) {
		return Status{InstanceID: id, State: StateMissing}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("status %s: %w", id, err)
	}
	st, err := baseStatus(info)
	if err != nil {
		return Status{}, err
	}
	return r.status(ctx, info.ID, st)
}

// List reports every instance of this Runtime's owner in the namespace.
// After an agent restart this is how it finds (adopts) the instances it
// already runs; containers of other owners are not listed.
func (r *Runtime) List(ctx context.Context) ([]Status, error) {
	ctx = r.ns(ctx)
	infos, err := r.client.ContainerService().List(ctx, r.ownedFilter())
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	// One call for every task's state, instead of three round trips per
	// instance: the agent lists on every pass, with many instances
	// starting at once every 100 ms. A task's ID is its container's;
	// containerd 1.6 leaves ContainerID empty here.
	procs := map[string]*apitask.Process{}
	if resp, err := r.client.TaskService().List(ctx, &tasks.ListTasksRequest{}); err == nil {
		for _, p := range resp.Tasks {
			procs[p.ID] = p
		}
	}
	out := make([]Status, 0, len(infos))
	for _, info := range infos {
		st, err := baseStatus(info)
		if err != nil {
			return nil, err
		}
		if p := procs[info.ID]; p != nil && p.Status != apitask.Status_STOPPED {
			// Running, or created and not yet started (fifty at once spend
			// whole passes there): the list says all there is.
			out = append(out, withProcess(st, p))
			continue
		}
		// Exited (its OOM mark is read from the task), or not in the list:
		// without a task, or with a shim the list skipped because it did
		// not answer. Ask about it alone.
		if st, err = r.status(ctx, info.ID, st); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// baseStatus is what the container's record says, before its task is
// looked at.
func baseStatus(info containers.Container) (Status, error) {
	id, err := uuid.Parse(info.Labels[labelInstance])
	if err != nil {
		return Status{}, fmt.Errorf("container %s: label %s: %w", info.ID, labelInstance, err)
	}
	st := Status{
		InstanceID:     id,
		State:          StateCreated,
		SpecHash:       info.Labels[labelSpecHash],
		Image:          info.Image,
		RuntimeHandler: info.Runtime.Name,
		OOMKilled:      info.Labels[labelOOM] != "",
		DiskKilled:     info.Labels[labelDisk] != "",
	}
	st.StartedAt, _ = time.Parse(time.RFC3339Nano, info.Labels[labelStartedAt])
	return st, nil
}

// status completes st, an instance's status from its container's
// record, with its task: one call, where loading the container and its
// task and asking the task took three.
func (r *Runtime) status(ctx context.Context, cid string, st Status) (Status, error) {
	if afterMarksRead != nil {
		afterMarksRead()
	}
	resp, err := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: cid})
	err = errgrpc.ToNative(err)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		st.State, st.Detail = StateUnknown, err.Error()
		return st, nil
	}
	st = withProcess(st, resp.Process)
	if st.State == StateExited {
		// The marks were read before the task was: the disk bound marks
		// an instance, then kills it, so a kill between the two reads
		// would pass for an unexplained one. Read them again, now that
		// the exit is seen.
		if info, err := r.client.ContainerService().Get(ctx, cid); err == nil {
			st.OOMKilled = st.OOMKilled || info.Labels[labelOOM] != ""
			st.DiskKilled = st.DiskKilled || info.Labels[labelDisk] != ""
		}
		if !st.OOMKilled {
			st.OOMKilled = r.oomKilled(ctx, cid)
		}
	}
	return st, nil
}

// withProcess is st as its task's process p says.
func withProcess(st Status, p *apitask.Process) Status {
	switch p.Status {
	case apitask.Status_CREATED:
	case apitask.Status_RUNNING:
		st.State, st.PID = StateRunning, p.Pid
	case apitask.Status_STOPPED:
		st.State, st.ExitCode, st.ExitedAt = StateExited, p.ExitStatus, protobuf.FromTimestamp(p.ExitedAt)
	default:
		st.State, st.Detail = StateUnknown, strings.ToLower(p.Status.String())
	}
	return st
}

// afterMarksRead, when set (by tests), runs between reading an instance's
// marks and its task: where a kill can come in between.
var afterMarksRead func()

// oomKilled asks the task's cgroup whether the kernel OOM-killed in it.
// This is what survives an agent that was down when the OOM event went
// by; it works with runc, whose exited task keeps its cgroup until it is
// deleted. Kata's metrics have no OOM counter: there the OOM event, which
// watchOOM records as a label, is the only witness.
func (r *Runtime) oomKilled(ctx context.Context, cid string) bool {
	resp, err := r.client.TaskService().Metrics(ctx, &tasks.MetricsRequest{Filters: []string{"id==" + cid}})
	if err != nil || len(resp.Metrics) == 0 || resp.Metrics[0].Data == nil {
		return false
	}
	v, err := typeurl.UnmarshalAny(resp.Metrics[0].Data)
	if err != nil {
		return false
	}
	switch m := v.(type) {
	case *cgroup1.Metrics:
		return m.GetMemoryOomControl().GetOomKill() > 0
	case *cgroup2.Metrics:
		return m.GetMemoryEvents().GetOomKill() > 0
	}
	return false
}
