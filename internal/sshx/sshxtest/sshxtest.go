// Package sshxtest runs a real OpenSSH server for tests: the system's
// sshd in inetd mode (`sshd -i`) behind a Go listener on a kernel-chosen
// loopback port, so there is no port to pick and nothing to clean up but
// the test's own temporary directory. Host key, user key and the
// server's configuration all live in t.TempDir(). The server runs
// commands as the test's user on this machine.
package sshxtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/zeitwork/zeitwork/internal/testenv"
)

// SSHD is where the server binary is looked for (Debian's openssh-server).
const SSHD = "/usr/sbin/sshd"

// Server is one listening OpenSSH server.
type Server struct {
	Addr   string     // 127.0.0.1:port
	User   string     // who to log in as
	Signer ssh.Signer // the user key it accepts
	// KeyFile holds that key, OpenSSH-encoded, for code that reads a path.
	KeyFile string

	t       testing.TB
	dir     string
	mu      sync.Mutex
	hostKey string
	n       int
}

// Start runs a server until the test ends. Without sshd the test is
// skipped, or fails under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		testenv.Unavailable(t, "sshd (apt package openssh-server)", err)
	}
	// sshd insists on its privilege-separation directory even in inetd mode.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		testenv.Unavailable(t, "sshd privilege-separation directory /run/sshd", err)
	}
	dir := t.TempDir()
	s := &Server{t: t, dir: dir, User: currentUser(t)}
	s.RotateHostKey()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.Signer, err = ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	s.KeyFile = filepath.Join(dir, "id_ed25519")
	write(t, s.KeyFile, pem.EncodeToMemory(block))
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(sshPub))
	write(t, filepath.Join(dir, "sshd_config"), []byte(
		"AuthorizedKeysFile "+filepath.Join(dir, "authorized_keys")+"\n"+
			"StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
			"PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n"))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.serve(c) }()
		}
	}()
	return s
}

// Authorize lets the holder of key log in too.
func (s *Server) Authorize(key ssh.PublicKey) {
	f, err := os.OpenFile(filepath.Join(s.dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(ssh.MarshalAuthorizedKey(key)); err != nil {
		s.t.Fatal(err)
	}
}

// RotateHostKey gives the server a new host key, as a reinstalled machine
// (or an impostor) would have.
func (s *Server) RotateHostKey() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		s.t.Fatal(err)
	}
	s.n++
	s.hostKey = filepath.Join(s.dir, "host_key_"+string(rune('0'+s.n)))
	write(s.t, s.hostKey, pem.EncodeToMemory(block))
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		s.t.Errorf("sshxtest: %v", err)
		return
	}
	defer f.Close()
	s.mu.Lock()
	hostKey := s.hostKey
	s.mu.Unlock()
	cmd := exec.Command(SSHD, "-i", "-f", filepath.Join(s.dir, "sshd_config"), "-h", hostKey)
	cmd.Stdin, cmd.Stdout = f, f
	out, err := os.Create(filepath.Join(s.dir, "sshd.log"))
	if err == nil {
		defer out.Close()
		cmd.Stderr = out
	}
	if err := cmd.Run(); err != nil && !errors.As(err, new(*exec.ExitError)) {
		s.t.Errorf("sshxtest: sshd: %v", err)
	}
}

func currentUser(t testing.TB) string {
	t.Helper()
	if os.Geteuid() == 0 {
		return "root"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	testenv.Unavailable(t, "a user name for sshd ($USER)", errors.New("USER is not set"))
	return ""
}

func write(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
