package operator_test

import (
	"context"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// The deploy step wakes on the agents' reports, not its poll: with a poll
// of an hour, a deployment whose instances report healthy (through
// instance.Store.Report, as the agents do) still goes active.
func TestDeployStepWakesOnInstanceReports(t *testing.T) {
	c := newCluster(t, 3)
	c.l.Policy.Poll = time.Hour
	c.l.Wakeups = &operator.Wakeups{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan error, 1)
	go func() { listening <- c.l.Wakeups.Run(ctx, c.pool, zlog.Discard()) }()

	dep := c.deployment(t)
	done := make(chan error, 1)
	go func() { done <- c.l.DeployUntilDone(ctx, dep) }()

	// Play the agents once the step has placed the instances.
	var ins []instance.Instance
	for len(ins) < 3 {
		time.Sleep(10 * time.Millisecond)
		var err error
		if ins, err = (instance.Store{DB: c.pool}).ListLive(ctx, dep); err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range ins {
		if _, err := (instance.Store{DB: c.pool, Node: in.NodeID}).Report(ctx, in.ID, instance.StateHealthy, ""); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-listening:
		t.Fatalf("listener ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the deploy step slept through its instances' reports")
	}
	if d := c.status(t, dep); d.Status != deployment.StatusActive {
		t.Fatalf("deployment %s, want active", d.Status)
	}
}

// A deployment's subscribers wake on its notification, and only they.
func TestWakeupsReachTheirDeploymentOnly(t *testing.T) {
	var w operator.Wakeups
	c := newCluster(t, 1)
	a, b := c.deployment(t), c.deployment(t)
	chA, cancelA := w.Subscribe(a)
	defer cancelA()
	chB, cancelB := w.Subscribe(b)
	w.Notify(a)
	select {
	case <-chA:
	default:
		t.Fatal("a's subscriber was not woken")
	}
	select {
	case <-chB:
		t.Fatal("b's subscriber was woken by a's notification")
	default:
	}
	cancelB()
	w.Notify(b) // no subscriber left: must not block or panic
}
