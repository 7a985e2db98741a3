package builder

import (
	"errors"
	"strings"
	"testing"

	bk "github.com/moby/buildkit/client"
)

func TestBuildKitRefusesHostNetworkWorkers(t *testing.T) {
	cni := &bk.WorkerInfo{ID: "w1", Labels: map[string]string{networkLabel: "cni"}}
	host := &bk.WorkerInfo{ID: "w2", Labels: map[string]string{networkLabel: "host"}}
	silent := &bk.WorkerInfo{ID: "w3"}
	for _, tc := range []struct {
		name      string
		allow     bool
		workers   []*bk.WorkerInfo
		wantError string
	}{
		{"cni", false, []*bk.WorkerInfo{cni}, ""},
		{"host", false, []*bk.WorkerInfo{host}, "network host"},
		{"one of two on host", false, []*bk.WorkerInfo{cni, host}, "worker w2"},
		{"not reported counts as host", false, []*bk.WorkerInfo{silent}, "not reported"},
		{"no workers", false, nil, "no workers"},
		{"host allowed", true, []*bk.WorkerInfo{host}, ""},
	} {
		err := BuildKit{Addr: "unix:///x.sock", AllowHostNetwork: tc.allow}.checkNetwork(tc.workers)
		switch {
		case tc.wantError == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantError != "" && (err == nil || !strings.Contains(err.Error(), tc.wantError)):
			t.Errorf("%s: err = %v, want one saying %q", tc.name, err, tc.wantError)
		}
	}
}

func TestFrontendAttrsNamespaceCacheMountsAndPinTheFrontend(t *testing.T) {
	a, b := frontendAttrs("project-a"), frontendAttrs("project-b")
	if a["build-arg:BUILDKIT_CACHE_MOUNT_NS"] == b["build-arg:BUILDKIT_CACHE_MOUNT_NS"] {
		t.Fatalf("two projects share the cache mount namespace %q", a["build-arg:BUILDKIT_CACHE_MOUNT_NS"])
	}
	// Without "cmdline", a "# syntax=" line hands the build to a frontend
	// image that may ignore the namespace.
	if v, ok := a["cmdline"]; !ok || v != "" {
		t.Fatalf("cmdline = %q, %v: the built-in frontend is not pinned", v, ok)
	}
}

func TestRedactCutsTokensAndKeepsTheRest(t *testing.T) {
	for _, tc := range []struct{ in, secret, keep string }{
		{`github: Get "https://codeload.github.com/a/b/legacy.tar.gz/abc?token=AAAABBBBCCCC": EOF`, "AAAABBBBCCCC", "codeload.github.com/a/b/legacy.tar.gz/abc"},
		{`Get "https://x-access-token:ghs_abcdefghijklmnop1234@github.com/a/b.git": refused`, "ghs_abcdefghijklmnop1234", "github.com/a/b.git"},
		{`unpack: token ghs_0123456789abcdefXYZ rejected`, "0123456789abcdefXYZ", "rejected"},
		{`s3: Get "http://m:9000/b/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeefcafe": reset`, "deadbeefcafe", "m:9000/b/k"},
		{`Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig`, "eyJhbGciOiJIUzI1NiJ9", "Authorization"},
		{`token=s3cr3t-value&x=1`, "s3cr3t-value", "x=1"},
	} {
		got := redactString(tc.in)
		if strings.Contains(got, tc.secret) || !strings.Contains(got, tc.keep) {
			t.Errorf("redact(%q) = %q: want %q gone and %q kept", tc.in, got, tc.secret, tc.keep)
		}
	}
	// The kind of error survives.
	base := UserError{errors.New(`Get "http://h/x?token=zzzz": EOF`)}
	err := redact(base)
	if strings.Contains(err.Error(), "zzzz") || !errors.As(err, new(UserError)) {
		t.Fatalf("redact(UserError) = %v (%T)", err, err)
	}
	if redact(nil) != nil {
		t.Fatal("redact(nil) != nil")
	}
}
