package config

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestNodeAgentHardeningSettings: the instance hardening and node stability
// settings have their documented defaults, and a bad one is named.
func TestNodeAgentHardeningSettings(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "NODE_INTERNAL_ADDRESS": "a:1"}
	cfg, err := ParseFrom[NodeAgent](base)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InstancePidsLimit != 512 || cfg.InstanceTmpSizeMB != 64 || cfg.InstanceUserNS != "auto" || cfg.InstanceUserNSBase != 1<<30 ||
		cfg.InstanceLogMaxSize != 10<<20 || cfg.PullStallTimeout != 30*time.Second || cfg.PullTimeout != 10*time.Minute ||
		cfg.ImageGCInterval != 10*time.Minute || cfg.ImageGCGrace != time.Hour ||
		cfg.InstanceStartBoost != 10*time.Second || cfg.InstanceStartBoostCPUMillis != 1000 {
		t.Fatalf("defaults: %+v", cfg)
	}
	for v, bad := range map[string]string{"INSTANCE_USERNS": "maybe", "INSTANCE_PIDS_LIMIT": "3", "PULL_TIMEOUT": "0s", "PULL_STALL_TIMEOUT": "-1s",
		"INSTANCE_START_BOOST": "-1s", "INSTANCE_START_BOOST_CPU_MILLIS": "5"} {
		vars := map[string]string{v: bad}
		for k, x := range base {
			vars[k] = x
		}
		_, err := ParseFrom[NodeAgent](vars)
		var cerr *Error
		if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{v}) {
			t.Errorf("%s=%s: %v, want it named", v, bad, err)
		}
	}
}
