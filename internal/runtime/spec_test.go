package runtime_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

func TestSpecHash(t *testing.T) {
	base := runtime.Spec{
		InstanceID: id.New(), Image: "registry/p:d", Port: 3000, CPUMillis: 500, MemoryMB: 256,
		Env: map[string]string{"A": "1", "B": "2", "C": "3"},
	}
	same := base
	same.InstanceID = id.New() // the id is not part of what runs
	same.Env = map[string]string{"C": "3", "A": "1", "B": "2"}
	for range 20 { // map order must not matter
		if same.Hash() != base.Hash() {
			t.Fatal("equal specs hash differently")
		}
	}
	changes := map[string]func(*runtime.Spec){
		"image":    func(s *runtime.Spec) { s.Image = "registry/p:e" },
		"env":      func(s *runtime.Spec) { s.Env = map[string]string{"A": "1", "B": "2", "C": "4"} },
		"port":     func(s *runtime.Spec) { s.Port = 3001 },
		"cpu":      func(s *runtime.Spec) { s.CPUMillis = 1000 },
		"cpu req":  func(s *runtime.Spec) { s.CPURequestMillis = 125 },
		"memory":   func(s *runtime.Spec) { s.MemoryMB = 512 },
		"netns":    func(s *runtime.Spec) { s.NetNSPath = "/var/run/netns/x" },
		"host net": func(s *runtime.Spec) { s.HostNetwork = true },
		"resolv":   func(s *runtime.Spec) { s.ResolvConf = "/etc/netns/x/resolv.conf" },
	}
	for name, change := range changes {
		s := base
		change(&s)
		if s.Hash() == base.Hash() {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
	// PORT in Env is overridden by Port, so it cannot change what runs.
	withPort := base
	withPort.Env = map[string]string{"A": "1", "B": "2", "C": "3", "PORT": "80"}
	if withPort.Hash() != base.Hash() {
		t.Error("an overridden PORT changes the hash")
	}
}

func TestSpecValidate(t *testing.T) {
	ok := runtime.Spec{InstanceID: id.New(), Image: "r/i:t", Port: 8080}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]runtime.Spec{
		"InstanceID":       {Image: "r/i:t", Port: 8080},
		"Image":            {InstanceID: id.New(), Port: 8080},
		"Port":             {InstanceID: id.New(), Image: "r/i:t", Port: 70000},
		"CPUMillis":        {InstanceID: id.New(), Image: "r/i:t", Port: 1, CPUMillis: -1},
		"MemoryMB":         {InstanceID: id.New(), Image: "r/i:t", Port: 1, MemoryMB: -1},
		"CPURequestMillis": {InstanceID: id.New(), Image: "r/i:t", Port: 1, CPUMillis: 100, CPURequestMillis: 200},
		"NetNSPath":        {InstanceID: id.New(), Image: "r/i:t", Port: 1, NetNSPath: "relative"},
		"HostNetwork": {InstanceID: id.New(), Image: "r/i:t", Port: 1, NetNSPath: "/run/netns/a",
			HostNetwork: true},
		"Env": {InstanceID: id.New(), Image: "r/i:t", Port: 1, Env: map[string]string{"": "x"}},
	} {
		err := s.Validate()
		if !errors.Is(err, runtime.ErrInvalidSpec) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := runtime.New(context.Background(), runtime.Config{
		Namespace: "bad namespace!", Owner: "node 1", LogDir: "relative", RuntimeHandler: "kata", LogMaxBytes: 10,
	})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, field := range []string{"Address", "Namespace", "Owner", "LogDir", "LogMaxBytes", "RuntimeHandler"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

// containerd's dialer waits for a missing socket to appear, so New's ctx
// is what bounds the wait: an agent started before containerd fails at its
// deadline, naming the socket, instead of hanging.
func TestNewFailsWithoutContainerd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := runtime.New(ctx, runtime.Config{
		Address: "/nonexistent/containerd.sock", Namespace: "zw-test", Owner: "test", LogDir: t.TempDir(),
	})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/containerd.sock") {
		t.Fatalf("New without containerd: %v", err)
	}
}
