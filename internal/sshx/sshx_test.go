package sshx_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/sshx"
	"github.com/zeitwork/zeitwork/internal/sshx/sshxtest"
)

func dial(t *testing.T, srv *sshxtest.Server, knownHosts string) (*sshx.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sshx.Dial(ctx, srv.Addr, sshx.Config{User: srv.User, Signer: srv.Signer, KnownHosts: knownHosts, Timeout: time.Minute})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestFirstConnectPinsTheHostKeyAndAChangedOneIsRefused(t *testing.T) {
	srv := sshxtest.Start(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if _, err := dial(t, srv, kh); err != nil {
		t.Fatalf("first connect: %v", err)
	}
	pinned, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(pinned, []byte("\n")); n != 1 {
		t.Fatalf("known_hosts has %d lines after the first connect, want 1:\n%s", n, pinned)
	}
	if _, err := dial(t, srv, kh); err != nil {
		t.Fatalf("second connect with the pinned key: %v", err)
	}
	again, _ := os.ReadFile(kh)
	if !bytes.Equal(again, pinned) {
		t.Fatalf("a known host was recorded again:\n%s", again)
	}

	srv.RotateHostKey()
	_, err = dial(t, srv, kh)
	if !errors.Is(err, sshx.ErrHostKeyChanged) {
		t.Fatalf("connect after the host key changed: %v, want ErrHostKeyChanged", err)
	}
	if !strings.Contains(err.Error(), "delete that line") || !strings.Contains(err.Error(), kh) {
		t.Errorf("the error does not say what to do: %v", err)
	}
	after, _ := os.ReadFile(kh)
	if !bytes.Equal(after, pinned) {
		t.Fatalf("a refused key was recorded:\n%s", after)
	}
}

func TestInstallVerifiesTheChecksumSetsTheModeAndSkipsWhatIsThere(t *testing.T) {
	srv := sshxtest.Start(t)
	c, err := dial(t, srv, filepath.Join(t.TempDir(), "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dst := filepath.Join(t.TempDir(), "etc", "zeitwork", "operator.env")
	data := []byte("DATABASE_URL=postgres://x\n")
	wrote, err := c.Install(ctx, dst, data, 0o600)
	if err != nil || !wrote {
		t.Fatalf("Install = %v, %v; want written", wrote, err)
	}
	// The "remote" machine is this one: look at what landed.
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Dir(dst)); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o755 {
		t.Errorf("created directory %v, want 0755", st.Mode().Perm())
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Errorf("content %q, want %q", got, data)
	}
	if wrote, err := c.Install(ctx, dst, data, 0o600); err != nil || wrote {
		t.Fatalf("second Install = %v, %v; want nothing written", wrote, err)
	}
	bin := filepath.Join(filepath.Dir(dst), "zeitwork")
	if wrote, err := c.Install(ctx, bin, bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18), 0o755); err != nil || !wrote {
		t.Fatalf("Install binary = %v, %v", wrote, err)
	}
	if st, _ := os.Stat(bin); st.Mode().Perm() != 0o755 {
		t.Errorf("binary mode %v, want 0755", st.Mode().Perm())
	}
	if _, err := os.Stat(dst + ".zeitwork-tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestAFailingCommandReportsItsStatusAndStderr(t *testing.T) {
	srv := sshxtest.Start(t)
	c, err := dial(t, srv, filepath.Join(t.TempDir(), "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Run(context.Background(), "echo partial; echo 'containerd: unit not found' >&2; exit 3", nil)
	var ce *sshx.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Run = %v, want a *CommandError", err)
	}
	if ce.Status != 3 || !strings.Contains(ce.Stderr, "containerd: unit not found") {
		t.Errorf("CommandError = %+v", ce)
	}
	if !strings.Contains(err.Error(), "status 3: containerd: unit not found") {
		t.Errorf("message %q does not carry the status and stderr", err)
	}
	if string(out) != "partial\n" {
		t.Errorf("stdout %q", out)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/zeitwork/operator.env": "/etc/zeitwork/operator.env",
		"it's":                       `'it'\''s'`,
		"":                           "''",
		"a b;rm":                     "'a b;rm'",
	} {
		if got := sshx.Quote(in); got != want {
			t.Errorf("Quote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGeneratedKeyIsReloaded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	s1, made, err := sshx.LoadOrGenerateKey(p, true)
	if err != nil || !made {
		t.Fatalf("generate: %v %v", made, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode().Perm())
	}
	s2, made, err := sshx.LoadOrGenerateKey(p, true)
	if err != nil || made {
		t.Fatalf("reload: %v %v", made, err)
	}
	if !bytes.Equal(s1.PublicKey().Marshal(), s2.PublicKey().Marshal()) {
		t.Error("reloaded key differs")
	}
	if _, _, err := sshx.LoadOrGenerateKey(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Error("a missing key without generate: no error")
	}
}
