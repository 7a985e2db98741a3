package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/id"
)

// webhookSecret is the API's GITHUB_WEBHOOK_SECRET.
const webhookSecret = "bench-webhook-secret"

// The repository the project builds, as GitHub's payloads name it.
const (
	installationID = int64(4242)
	repositoryID   = int64(1296269)
	repoFullName   = "bench-org/app"
)

// world is a signed-up, admitted user with an API token, whose
// organisation has projects, one of them connected to repoFullName's
// main branch through the App's installation.
type world struct {
	pool    *pgxpool.Pool
	token   string    // an API token
	cookie  string    // the session of the same user, for the cookie row
	project uuid.UUID // the connected one
}

func newWorld(ctx context.Context, dbURL string, projects int) (*world, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	w := &world{pool: pool}
	if err := w.setup(ctx, projects); err != nil {
		pool.Close()
		return nil, fmt.Errorf("setup: %w", err)
	}
	return w, nil
}

func (w *world) close() { w.pool.Close() }

func (w *world) setup(ctx context.Context, projects int) error {
	accounts := account.Store{DB: w.pool}
	u, session, err := accounts.SignIn(ctx, account.Profile{GitHubUserID: 1, Login: "bench", Email: "bench@example.com"})
	if err != nil {
		return err
	}
	if err := accounts.Admit(ctx, u.ID); err != nil {
		return err
	}
	tok, err := accounts.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		return err
	}
	w.token, w.cookie = tok.Secret, session.Token
	var org uuid.UUID
	if err := w.pool.QueryRow(ctx, `SELECT organisation_id FROM organisation_members WHERE user_id = $1`, u.ID).Scan(&org); err != nil {
		return err
	}
	inst := id.New()
	w.project = id.New()
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
		  VALUES ($1, $2, $3, 'bench-org', 'Organization')`, []any{inst, installationID, org}},
		{`INSERT INTO projects (id, organisation_id, slug, name, github_installation_id, github_repository_id, github_repository_full_name, branch)
		  VALUES ($1, $2, 'app', 'App', $3, $4, $5, 'main')`, []any{w.project, org, inst, repositoryID, repoFullName}},
		{`INSERT INTO projects (id, organisation_id, slug, name)
		  SELECT gen_random_uuid(), $1, 'other-' || i, 'Other ' || i FROM generate_series(2, $2::int) i`, []any{org, projects}},
	} {
		if _, err := w.pool.Exec(ctx, s.q, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// apiProc is a `zeitwork api` process.
type apiProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	url  string // http://127.0.0.1:port
	log  string
}

// startAPI runs `zeitwork api` on a kernel-chosen port (read back from its
// "api running" log line), with the webhook secret set.
func startAPI(bin, dbURL string) (*apiProc, error) {
	dir, err := os.MkdirTemp("", "zw-bench-api-")
	if err != nil {
		return nil, err
	}
	p := &apiProc{log: filepath.Join(dir, "api.log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, "api")
	p.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "API_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "LOG_LEVEL=info",
		"GITHUB_WEBHOOK_SECRET="+webhookSecret)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start zeitwork api: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			return nil, fmt.Errorf("zeitwork api exited:\n%s", b)
		default:
		}
		if addr := listening(p.log); addr != "" {
			p.url = "http://" + addr
			return p, nil
		}
	}
	p.stop()
	return nil, errors.New("zeitwork api did not say where it listens within 30 s")
}

// listening is the addr of the "api running" line in the log, if any.
func listening(log string) string {
	f, err := os.Open(log)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "api running" && strings.HasPrefix(line.Addr, "127.0.0.1:") {
			return line.Addr
		}
	}
	return ""
}

func (p *apiProc) pid() int { return p.cmd.Process.Pid }

// alive is nil while the process runs.
func (p *apiProc) alive() error {
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		return fmt.Errorf("zeitwork api exited:\n%s", b)
	default:
		return nil
	}
}

// stop: SIGTERM, then SIGKILL after five seconds.
func (p *apiProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = os.RemoveAll(filepath.Dir(p.log))
}

// cpu is the process's CPU time so far, user and system.
func (p *apiProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(f[11], &utime) //nolint:errcheck
	fmt.Sscan(f[12], &stime) //nolint:errcheck
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/*/stat times: 100 on Linux.
const clockTicks = 100
