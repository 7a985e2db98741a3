package nodeagent_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type recordingPruner struct {
	mu     sync.Mutex
	graces []time.Duration
	called chan struct{}
}

func (p *recordingPruner) PruneImages(_ context.Context, grace time.Duration) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.graces = append(p.graces, grace)
	select {
	case p.called <- struct{}{}:
	default:
	}
	return nil, nil
}

// gcObserver is the fake runtime as the node API sees it.
type gcObserver struct{ *fakeRuntime }

func (o gcObserver) Status(_ context.Context, iid uuid.UUID) (runtime.Status, error) {
	return runtime.Status{InstanceID: iid, State: runtime.StateMissing}, nil
}

func (o gcObserver) Logs(context.Context, uuid.UUID, bool) (io.ReadCloser, error) {
	return nil, errors.New("no logs here")
}

// TestAgentPrunesImagesOnItsInterval: a running agent asks the runtime to
// prune unused images, every ImageGCInterval, with ImageGCGrace.
func TestAgentPrunesImagesOnItsInterval(t *testing.T) {
	h := newHarness(t)
	p := &recordingPruner{called: make(chan struct{}, 1)}
	a := &nodeagent.Agent{
		Pool: h.pool, Node: h.node, Converger: h.c, Observer: gcObserver{h.rt}, Token: "t", Version: "test",
		PollInterval: time.Second, HeartbeatInterval: time.Second, Log: zlog.Discard(),
		Images: p, ImageGCInterval: 20 * time.Millisecond, ImageGCGrace: 42 * time.Minute,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil, nil) }()
	for range 2 {
		select {
		case <-p.called:
		case <-time.After(20 * time.Second):
			t.Fatal("the agent never pruned images")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.graces {
		if g != 42*time.Minute {
			t.Fatalf("pruned with grace %s, want 42m", g)
		}
	}
}
