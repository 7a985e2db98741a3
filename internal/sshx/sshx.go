// Package sshx is how bootstrap reaches a machine: an SSH client that pins
// each host's key the first time it connects and refuses a changed one,
// runs commands with their output captured, and writes files with their
// mode. It speaks golang.org/x/crypto/ssh, so the operator's machine needs
// no ssh binary and every step's I/O is in Go, where it can be checked.
//
// Host keys are recorded in an OpenSSH known_hosts file (bootstrap keeps
// it next to cluster.yaml): the format `ssh` itself reads, so a person can
// inspect or edit it and `ssh -o UserKnownHostsFile=…` trusts the same
// machines.
package sshx

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKeyChanged: the machine presented a different key than the one
// recorded for it. Either it was reinstalled (remove its line from the
// known_hosts file) or someone is in the middle.
var ErrHostKeyChanged = errors.New("host key changed")

// Config says how to reach machines.
type Config struct {
	User       string
	Signer     ssh.Signer
	KnownHosts string        // path of the known_hosts file; created on first use
	Timeout    time.Duration // dial and handshake; 0: 15s
}

// Client is one SSH connection to one machine.
type Client struct {
	addr string
	c    *ssh.Client
}

// knownHostsMu serialises pinning so that concurrent first connections do
// not interleave their lines.
var knownHostsMu sync.Mutex

// Dial connects to addr (host or host:port, port 22 by default). A host
// seen for the first time has its key appended to cfg.KnownHosts; a host
// whose key differs from the recorded one is refused with ErrHostKeyChanged.
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	var pinErr error
	cc := &ssh.ClientConfig{
		User: cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			pinErr = pin(cfg.KnownHosts, hostname, remote, key)
			return pinErr
		},
		// One fixed preference, Ed25519 first (every supported distribution
		// generates that host key): a machine offering several keys is
		// then always checked against the same one.
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256},
		Timeout:           timeout,
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(timeout))
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cc)
	if err != nil {
		conn.Close()
		if pinErr != nil {
			return nil, fmt.Errorf("ssh %s: %w", addr, pinErr)
		}
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &Client{addr: addr, c: ssh.NewClient(sc, chans, reqs)}, nil
}

// pin checks key against the known_hosts file, recording it if the host is
// new there.
func pin(file, hostname string, remote net.Addr, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return fmt.Errorf("create known_hosts: %w", err)
		}
	}
	check, err := knownhosts.New(file)
	if err != nil {
		return fmt.Errorf("read known_hosts %s: %w", file, err)
	}
	err = check(hostname, remote, key)
	var ke *knownhosts.KeyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return fmt.Errorf("%w: %s presented %s %s, but %s:%d records %s; if the machine was reinstalled, delete that line",
			ErrHostKeyChanged, hostname, key.Type(), ssh.FingerprintSHA256(key), ke.Want[0].Filename, ke.Want[0].Line, ssh.FingerprintSHA256(ke.Want[0].Key))
	case errors.As(err, &ke):
		f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("record host key: %w", err)
		}
		defer f.Close()
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		if _, err := fmt.Fprintln(f, line); err != nil {
			return fmt.Errorf("record host key: %w", err)
		}
		return f.Sync()
	default:
		return err
	}
}

// Addr is host:port of the machine.
func (c *Client) Addr() string { return c.addr }

// Close ends the connection.
func (c *Client) Close() error { return c.c.Close() }

// CommandError is a command that ran and failed: its exit status and what
// it wrote to stderr, which is what a person needs to fix it.
type CommandError struct {
	Addr    string
	Command string
	Status  int // -1: no exit status (killed by a signal, connection lost)
	Stderr  string
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = "(no output on stderr)"
	}
	return fmt.Sprintf("%s: `%s` exited with status %d: %s", e.Addr, e.Command, e.Status, msg)
}

// Run runs cmd through the remote user's shell with stdin, and returns its
// stdout. A non-zero exit is a *CommandError carrying stderr.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader) ([]byte, error) {
	s, err := c.c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%s: new session: %w", c.addr, err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &stdout, &stderr, stdin
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		s.Close()
		return nil, fmt.Errorf("%s: `%s`: %w", c.addr, cmd, ctx.Err())
	}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case errors.As(err, &ee):
		return stdout.Bytes(), &CommandError{Addr: c.addr, Command: cmd, Status: ee.ExitStatus(), Stderr: stderr.String()}
	case errors.As(err, new(*ssh.ExitMissingError)):
		return stdout.Bytes(), &CommandError{Addr: c.addr, Command: cmd, Status: -1, Stderr: stderr.String()}
	default:
		return stdout.Bytes(), fmt.Errorf("%s: `%s`: %w", c.addr, cmd, err)
	}
}

// Upload writes data to the remote path with mode, atomically: readers see
// the old file or the new one, never a half-written one, and the file never
// exists with a wider mode than asked (it is created under umask 077 and
// chmod-ed before it is renamed into place). Missing parent directories
// are created 0755.
func (c *Client) Upload(ctx context.Context, dst string, data []byte, mode os.FileMode) error {
	tmp := dst + ".zeitwork-tmp"
	sum := sha256.Sum256(data)
	// Directories are created 0755: a 0600 file needs no closed directory,
	// and a closed /var/lib/zeitwork would keep systemd's dynamic users
	// out of their state directories below it.
	cmd := fmt.Sprintf("(umask 022 && mkdir -p %s) && umask 077 && cat > %s && chmod %04o %s && test \"$(sha256sum < %s | cut -d' ' -f1)\" = %s && mv -f %s %s",
		Quote(path.Dir(dst)), Quote(tmp), mode.Perm(), Quote(tmp), Quote(tmp), hex.EncodeToString(sum[:]), Quote(tmp), Quote(dst))
	if _, err := c.Run(ctx, cmd, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("upload %s: %w", dst, err)
	}
	return nil
}

// SHA256 returns the hex SHA-256 of the remote file, or "" when it does not
// exist.
func (c *Client) SHA256(ctx context.Context, p string) (string, error) {
	sums, err := c.SHA256s(ctx, []string{p})
	if err != nil {
		return "", err
	}
	return sums[0], nil
}

// SHA256s is SHA256 of several files in one round trip.
func (c *Client) SHA256s(ctx context.Context, paths []string) ([]string, error) {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = Quote(p)
	}
	out, err := c.Run(ctx, "for p in "+strings.Join(q, " ")+`; do if [ -e "$p" ]; then sha256sum < "$p" | cut -d' ' -f1; else echo -; fi; done`, nil)
	if err != nil {
		return nil, err
	}
	sums := strings.Fields(string(out))
	if len(sums) != len(paths) {
		return nil, fmt.Errorf("%s: checksums: %d answers for %d files", c.addr, len(sums), len(paths))
	}
	for i, s := range sums {
		if s == "-" {
			sums[i] = ""
		}
	}
	return sums, nil
}

// Install uploads data to dst with mode unless dst already holds exactly
// data, and verifies the checksum of what landed. It reports whether it
// wrote anything.
func (c *Client) Install(ctx context.Context, dst string, data []byte, mode os.FileMode) (bool, error) {
	want := sha256.Sum256(data)
	have, err := c.SHA256(ctx, dst)
	if err != nil {
		return false, err
	}
	if have == hex.EncodeToString(want[:]) {
		return false, nil
	}
	if err := c.Upload(ctx, dst, data, mode); err != nil {
		return false, err
	}
	have, err = c.SHA256(ctx, dst)
	if err != nil {
		return true, err
	}
	if have != hex.EncodeToString(want[:]) {
		return true, fmt.Errorf("%s: %s has checksum %s after upload, want %x", c.addr, dst, have, want)
	}
	return true, nil
}

// Quote makes s one word for a POSIX shell.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// LoadOrGenerateKey reads the OpenSSH private key at p, or, if there is
// none, generates an Ed25519 key there (0600) with its .pub beside it
// (the line to put in the machines' authorized_keys).
func LoadOrGenerateKey(p string, generate bool) (ssh.Signer, bool, error) {
	raw, err := os.ReadFile(p)
	switch {
	case err == nil:
		s, err := ssh.ParsePrivateKey(raw)
		if err != nil {
			return nil, false, fmt.Errorf("ssh key %s: %w", p, err)
		}
		return s, false, nil
	case errors.Is(err, os.ErrNotExist) && generate:
	default:
		return nil, false, fmt.Errorf("ssh key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "zeitwork bootstrap")
	if err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, false, fmt.Errorf("write ssh key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(p+".pub", ssh.MarshalAuthorizedKey(s.PublicKey()), 0o644); err != nil {
		return nil, false, fmt.Errorf("write ssh public key: %w", err)
	}
	return s, true, nil
}
