package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/zeitwork/zeitwork/internal/testenv"
)

// backendBody is what the backend answers; both proxies must pass it on.
const backendBody = "hello from the backend\n"

// appsDomain is the edge's EDGE_APPS_DOMAIN.
const appsDomain = "bench.test"

// proc is a child process in a process group of its own, so that stopping
// it stops its children too (nginx's workers), and which dies with us if we
// are killed outright (Pdeathsig).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // how it ended, once done is closed
	log  string
}

func start(name string, cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive is nil while the process runs, else says how it ended.
func (p *proc) alive() error {
	select {
	case <-p.done:
		msg := fmt.Sprintf("%s exited: %v", p.name, p.err)
		if p.log != "" {
			if b, err := os.ReadFile(p.log); err == nil && len(b) > 0 {
				msg += "\n" + tail(string(b), 2000)
			}
		}
		return errors.New(msg)
	default:
		return nil
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after five seconds.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.pid(), syscall.SIGTERM) //nolint:errcheck
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.pid(), syscall.SIGKILL) //nolint:errcheck
		<-p.done
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// startApp starts the app o asks for on n ports, dir holding what it
// writes (nginx's config and logs).
func startApp(o options, dir string, n int) (*proc, []string, error) {
	if o.app == appNginx {
		return startNginxApp(dir, n)
	}
	return startBackend(o.backend, n)
}

// nginxHead begins both nginx configurations (the proxy's and the app's):
// a process of its own in the foreground, its state under .Dir, the http
// block open, keep-alive never ended by nginx.
const nginxHead = `user root;
worker_processes {{.Workers}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    keepalive_requests 1000000;
`

// runNginx writes conf, executed with data, to dir/nginx.conf and runs
// nginx on it in the foreground on side's CPUs, its state and error log
// under dir.
func runNginx(name, dir string, s side, conf *template.Template, data any) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := conf.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("%s config: %w", name, err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return nil, err
	}
	errLog := filepath.Join(dir, "error.log")
	cmd := exec.Command("nginx", "-c", path, "-p", dir, "-e", errLog, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cpus.pin(cmd, s)
	p, err := start(name, cmd)
	if err != nil {
		return nil, err
	}
	p.log = errLog
	return p, nil
}

// nginxAppConf is nginx as the app: n servers answering what the Go
// backend answers, from the config alone.
var nginxAppConf = template.Must(template.New("app.conf").Parse(nginxHead + `{{- range .Listen}}
    server {
        listen {{.}};
        location / {
            default_type "text/plain; charset=utf-8";
            return 200 {{$.Body}};
        }
    }
{{- end}}
}
`))

// startNginxApp runs nginx as the app on n loopback ports.
func startNginxApp(dir string, n int) (*proc, []string, error) {
	var addrs []string
	for range n {
		addr, err := freeAddr()
		if err != nil {
			return nil, nil, err
		}
		addrs = append(addrs, addr)
	}
	p, err := runNginx("app (nginx)", dir, loadSide, nginxAppConf, struct {
		Dir, Workers string
		Listen       []string
		Body         string
	}{dir, cpus.workers(loadSide), addrs, strconv.Quote(backendBody)})
	return p, addrs, err
}

// startBackend runs the backend on n ports and returns their addresses.
func startBackend(bin string, n int) (*proc, []string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	cmd := exec.Command(bin, "-n", strconv.Itoa(n), "-body", backendBody)
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	cpus.pin(cmd, loadSide)
	p, err := start("backend", cmd)
	w.Close()
	if err != nil {
		return nil, nil, err
	}
	var addrs []string
	sc := bufio.NewScanner(r)
	for len(addrs) < n && sc.Scan() {
		addrs = append(addrs, strings.TrimSpace(sc.Text()))
	}
	if len(addrs) < n {
		p.stop()
		return nil, nil, fmt.Errorf("backend printed %d of %d addresses: %v", len(addrs), n, p.alive())
	}
	return p, addrs, nil
}

// freeAddr is a loopback address for a proxy the bench starts next. Its
// port stays reserved (bound, never listening) until the bench ends: a
// port merely free when asked can be taken by an outgoing connection
// before the proxy binds it (it happened, as "address already in use").
// The proxies bind it beside the reservation with SO_REUSEADDR, as Go's
// listeners and nginx do.
func freeAddr() (string, error) {
	port, _, err := testenv.ReservePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// startEdgeEnv runs `zeitwork edge` on plain HTTP (EDGE_HTTPS_ADDR=off), as
// nginx is, with extra environment (GOGC, say), and returns the addresses
// it serves and its metrics on. Its poll is one minute, so within the
// benchmark only NOTIFY moves routes.
func startEdgeEnv(bin, dbURL, snapshot, dataPath string, env ...string) (p *proc, addr, metrics string, err error) {
	if addr, err = freeAddr(); err != nil {
		return nil, "", "", err
	}
	if metrics, err = freeAddr(); err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(bin, "edge")
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL, "NODE_PROXY_TOKEN=bench", "EDGE_HTTP_ADDR="+addr, "EDGE_METRICS_ADDR="+metrics,
		"EDGE_HTTPS_ADDR=off", "EDGE_DATA_PATH="+dataPath,
		"EDGE_APPS_DOMAIN="+appsDomain, "EDGE_ROUTES_SNAPSHOT="+snapshot, "EDGE_POLL_INTERVAL=1m", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cpus.pin(cmd, proxySide)
	p, err = start("edge ("+dataPath+")", cmd)
	return p, addr, metrics, err
}

// startFasthttp runs bench/edge/fasthttpproxy for host in front of the
// backends, with a pprof endpoint if asked.
func startFasthttp(bin, host string, backends []string, pprof bool) (proxy, error) {
	addr, err := freeAddr()
	if err != nil {
		return proxy{}, err
	}
	px := proxy{name: fasthttpPx, addr: addr}
	args := []string{"-listen", addr, "-host", host, "-backends", strings.Join(backends, ",")}
	if pprof {
		if px.pprof, err = freeAddr(); err != nil {
			return proxy{}, err
		}
		args = append(args, "-pprof", px.pprof)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cpus.pin(cmd, proxySide)
	px.p, err = start(fasthttpPx, cmd)
	return px, err
}

// nginxConf is the reference: what one would write to put nginx in front of
// three app instances, keep-alive on both sides. keepalive_requests is
// raised from its default of 1000 (after which nginx closes the client's
// connection) because the edge never closes a busy one: the comparison is
// of proxying, not of reconnecting.
var nginxConf = template.Must(template.New("nginx.conf").Parse(nginxHead + `    upstream app {
{{- range .Backends}}
        server {{.}};
{{- end}}
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen {{.Listen}} reuseport{{if .Cert}} ssl{{end}}{{if .HTTP2}} http2{{end}};
{{- if .Cert}}
        ssl_certificate {{.Cert.Cert}};
        ssl_certificate_key {{.Cert.Key}};
        ssl_protocols TLSv1.2 TLSv1.3;
        # The cipher crypto/tls picks on a machine with AES instructions:
        # left alone, nginx takes the client's first, which for wrk
        # (OpenSSL) is AES-256-GCM.
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        ssl_prefer_server_ciphers on;
{{- end}}
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
{{- range .Headers}}
            proxy_set_header {{.}};
{{- end}}
        }
    }
}
`))

// edgeHeaders are the request fields the edge sets beside X-Forwarded-For,
// for an nginx that sends the app what the edge sends: the app's cost of
// parsing them is then in both. The instance is a fixed UUID of the edge's
// length (nginx picks the upstream after the fields are made).
var edgeHeaders = []string{
	"X-Forwarded-Host $host",
	"X-Forwarded-Proto $scheme",
	"X-Request-Id $request_id",
	"X-Zeitwork-Proxy-Token bench",
	"X-Zeitwork-Instance 0193a1b2-c3d4-7e5f-8071-8293a4b5c6d7",
}

// startNginx runs nginx in the foreground with a configuration and state
// of its own under dir; headers are further proxy_set_header lines.
func startNginx(dir string, backends, headers []string, cert *certPair, http2 bool) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	type pair struct{ Cert, Key string }
	var tlsFiles *pair
	if cert != nil {
		tlsFiles = &pair{cert.cert, cert.key}
	}
	p, err := runNginx("nginx", dir, proxySide, nginxConf, struct {
		Dir, Workers, Listen string
		Backends             []string
		Headers              []string
		Cert                 *pair
		HTTP2                bool
	}{dir, cpus.workers(proxySide), addr, backends, headers, tlsFiles, http2})
	return p, addr, err
}

// proxy is one of the proxies under test; p is nil for the backend
// itself, asked directly as the reference for added latency.
type proxy struct {
	name, addr string
	tls        bool    // serves HTTPS
	h2         bool    // measured over HTTP/2, with h2load
	cipher     *string // the TLS cipher h2load negotiated (nil: not noted)
	p          *proc
	pprof      string // where it serves /debug/pprof (empty: nowhere)
	// backend is the app behind it, whose CPU a run also counts: what a
	// proxy's way of talking to it costs the app is part of the proxy's cost.
	backend *proc
}

// url is where wrk asks the proxy.
func (px proxy) url() string {
	if px.tls {
		return "https://" + px.addr + "/"
	}
	return "http://" + px.addr + "/"
}

// get asks the URL for host.
func get(ctx context.Context, client *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitServes waits until the proxy answers host with the backend's body,
// and fails with what it answered instead after a minute (or at once if
// the proxy exited).
func waitServes(ctx context.Context, px proxy, host string) error {
	// The benchmark's certificate is its own: nothing to verify it against.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, err := get(ctx, client, px.url(), host)
		if err == nil && code == http.StatusOK && body == backendBody {
			return nil
		}
		if aerr := px.p.alive(); aerr != nil {
			return aerr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%s at %s never served Host %s: %w", px.name, px.addr, host, err)
			}
			return fmt.Errorf("%s at %s never served Host %s: last answer %d %q, want 200 %q", px.name, px.addr, host, code, tail(body, 300), backendBody)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpu is the CPU time (user and system) used so far by the processes of
// p's group that still run: the edge, or nginx's master and workers.
func (p *proc) cpu() time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, path := range dirs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// After "pid (comm) ": state ppid pgrp ... utime stime (fields 3..15).
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || f[2] != strconv.Itoa(p.pid()) {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += utime + stime
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// switches is the context switches (voluntary and not) of the threads of
// p's group that still run: how often the kernel put one of them to sleep
// or took the CPU from it.
func (p *proc) switches() int64 {
	var n int64
	pids, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range pids {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(p.pid()) {
			continue
		}
		tasks, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "task", "*", "status"))
		for _, t := range tasks {
			st, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for line := range strings.Lines(string(st)) {
				for _, k := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
					if v, ok := strings.CutPrefix(line, k); ok {
						c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
						n += c
					}
				}
			}
		}
	}
	return n
}

// machineCPU is the machine's idle and total CPU time so far, in ticks,
// from the first line of /proc/stat (idle and iowait count as idle).
func machineCPU() (idle, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is in user already
			total += n
		}
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return idle, total
}

// wakeIPIs is how many interrupts the machine's CPUs have taken, all
// together, to be told of work another CPU made for them: rescheduling
// (RES) and function-call (CAL) interrupts in /proc/interrupts, which
// is how a wake-up reaches a CPU that sleeps. In a virtual machine each
// is an exit to the hypervisor for the CPU that sends it.
func wakeIPIs() int64 {
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return 0
	}
	return parseWakeIPIs(string(b))
}

func parseWakeIPIs(s string) int64 {
	var n int64
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != "RES:" && f[0] != "CAL:") {
			continue
		}
		for _, v := range f[1:] {
			c, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				break // the description
			}
			n += c
		}
	}
	return n
}

// clockTicks is USER_HZ, the unit of /proc/*/stat times: 100 on Linux.
const clockTicks = 100

// rss is a process's resident memory in KiB (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}
