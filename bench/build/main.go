// Command build times image builds of a real app through Zeitwork's builder
// (internal/builder: BuildKit's Go client, push, registry cache) against
// the reference, BuildKit's own CLI (buildctl) building the same generated
// Dockerfile with the same cache options, in one run, on a buildkitd of the
// bench's own (its own --root, started and stopped here; the shared one is
// never touched) whose RUN steps use the isolated network scripts/deps.sh
// sets up. Each run, for each of the two:
//
//   - cold: a fresh buildkitd and a new repository, nothing cached;
//   - warm: the same build again on the same buildkitd (its layer cache);
//   - no change, registry cache only: the same build on a fresh buildkitd
//     (empty --root), so all it has is the registry cache the cold build
//     exported — what a build on another builder, or after a restart, sees.
//
// It prints min/median/max over the runs, the image size, and where the
// no-change build spent its time (BuildKit's steps, from its progress).
// `docker build` would be the natural reference, but no Docker engine runs
// on these machines. Run with bench/build/run.sh.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"

	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	bk "github.com/moby/buildkit/client"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/source"
)

type options struct {
	registry  string
	buildctl  string
	buildkitd string
	cniConf   string
	cniBin    string
	app       string
	before    string
	runs      int
	reuse     string
	keep      string
	profile   string
	reverse   bool
}

func main() {
	var o options
	flag.StringVar(&o.registry, "registry", "127.0.0.1:25000", "registry (also the base image mirror)")
	flag.StringVar(&o.buildctl, "buildctl", "", "path to buildctl")
	flag.StringVar(&o.buildkitd, "buildkitd", "", "path to buildkitd")
	flag.StringVar(&o.cniConf, "cni-conf", "/var/lib/zeitwork-dev/buildkitd/cni.conflist", "CNI network for RUN steps (written by scripts/deps.sh)")
	flag.StringVar(&o.cniBin, "cni-bin", "", "directory of the CNI plugins")
	flag.StringVar(&o.app, "app", "test/e2e/testdata/apps/nextjs", "the app to build (a Dockerfile is generated for it)")
	flag.StringVar(&o.before, "before", "", "optional Dockerfile to build once for comparison of image size")
	flag.IntVar(&o.runs, "runs", 3, "runs")
	flag.StringVar(&o.reuse, "reuse", "", "a repository of an earlier run: time only the no-change build against its registry cache")
	flag.StringVar(&o.keep, "keep", "", "a directory to keep each no-change build's progress output in")
	flag.BoolVar(&o.reverse, "reverse", false, "let buildctl go first in the first run")
	flag.StringVar(&o.profile, "cpuprofile", "", "write the bench process's CPU profile (the builder's client side: source, context transfer) here")
	flag.Parse()
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	err := run(o)
	if o.profile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// daemon is the bench's own buildkitd.
type daemon struct {
	o    options
	dir  string // holds --root, the socket and the config
	addr string
	cmd  *exec.Cmd
}

const buildkitdConfig = `[worker.oci]
  enabled = true
  binary = "runc"
  networkMode = "cni"
  cniConfigPath = %q
  cniBinaryPath = %q
  cniPoolSize = 1

[worker.containerd]
  enabled = false

[registry.%q]
  http = true
  insecure = true
`

// start runs buildkitd on an empty root.
func (d *daemon) start(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "zw-bench-buildkitd-")
	if err != nil {
		return err
	}
	d.dir = dir
	d.addr = "unix://" + filepath.Join(dir, "buildkitd.sock")
	cfg := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, buildkitdConfig, d.o.cniConf, d.o.cniBin, d.o.registry), 0o644); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(dir, "buildkitd.log"))
	if err != nil {
		return err
	}
	d.cmd = exec.Command(d.o.buildkitd, "--root", filepath.Join(dir, "root"), "--addr", d.addr, "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := bk.New(ctx, d.addr)
		if err == nil {
			_, err = c.ListWorkers(ctx)
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			d.stop()
			return fmt.Errorf("buildkitd did not come up: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends buildkitd (SIGTERM: it releases its CNI namespaces) and removes
// its state.
func (d *daemon) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }() //nolint:errcheck
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill() //nolint:errcheck
			<-done
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
	d.cmd, d.dir = nil, ""
}

func (d *daemon) restart(ctx context.Context) error {
	d.stop()
	return d.start(ctx)
}

// tool builds the app's Dockerfile into repo:tag on the daemon at addr,
// writing BuildKit's plain progress to progress.
type tool struct {
	name  string
	build func(ctx context.Context, addr, repo, tag string, progress io.Writer) (size int64, err error)
}

type sample struct {
	cold, warm, nochange time.Duration
	size                 int64
	profile              string // the no-change build's steps
	coldProfile          string
}

func run(o options) error {
	ctx := context.Background()
	plan, err := detect.Detect(os.DirFS(o.app), detect.Options{BaseImages: detect.WithRegistry(o.registry)})
	if err != nil {
		return fmt.Errorf("detect %s: %w", o.app, err)
	}
	fmt.Fprintf(os.Stderr, "bench: %s is %s: %s\n", o.app, plan.Kind, strings.Join(plan.Reasons, "; "))
	if plan.DockerfilePath != "" {
		return fmt.Errorf("%s has its own Dockerfile: the bench builds generated ones", o.app)
	}
	registry := builder.Registry{Host: o.registry, Insecure: true}

	// The zeitwork builder's builds go the builder's whole way from the
	// source on: the archive a CLI uploaded, fetched from the object store and
	// unpacked, detection, then BuildKit.
	s3, bucket, err := objectStore()
	if err != nil {
		return err
	}
	key, err := upload(ctx, s3, bucket, o.app)
	if err != nil {
		return fmt.Errorf("upload %s: %w", o.app, err)
	}
	defer s3.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{}) //nolint:errcheck
	ours := func(df []byte) tool {
		return tool{"zeitwork builder", func(ctx context.Context, addr, repo, tag string, progress io.Writer) (int64, error) {
			start := time.Now()
			work, err := os.MkdirTemp("", "zw-bench-src-")
			if err != nil {
				return 0, err
			}
			defer os.RemoveAll(work)
			rc, err := source.FromS3(ctx, s3, bucket, key)
			if err != nil {
				return 0, err
			}
			defer rc.Close()
			if _, err := source.Unpack(ctx, rc, work, source.Limits{MaxBytes: 1 << 30, MaxFileBytes: 256 << 20, MaxFiles: 100_000}); err != nil {
				return 0, err
			}
			p, err := detect.Detect(os.DirFS(work), detect.Options{BaseImages: detect.WithRegistry(o.registry)})
			if err != nil {
				return 0, err
			}
			if df == nil {
				df = p.Dockerfile
			}
			sourceTimes = append(sourceTimes, time.Since(start))
			kit := builder.BuildKit{Addr: addr}
			img, err := kit.Build(ctx, builder.Request{
				ContextDir: work, Dockerfile: df, DockerIgnore: p.DockerIgnore,
				Repository: repo, Tag: tag, Registry: registry,
			}, progress)
			return img.Size, err
		}}
	}
	dfDir, err := os.MkdirTemp("", "zw-bench-dockerfile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dfDir)
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), plan.Dockerfile, 0o644); err != nil {
		return err
	}
	if plan.DockerIgnore != nil {
		if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile.dockerignore"), plan.DockerIgnore, 0o644); err != nil {
			return err
		}
	}
	ref := tool{"buildctl", func(ctx context.Context, addr, repo, tag string, progress io.Writer) (int64, error) {
		r := o.registry + "/" + repo
		cmd := exec.CommandContext(ctx, o.buildctl, "--addr", addr, "build", "--progress", "plain",
			"--frontend", "dockerfile.v0", "--local", "context="+o.app, "--local", "dockerfile="+dfDir,
			"--opt", "build-arg:BUILDKIT_CACHE_MOUNT_NS=zeitwork-project-"+repo,
			"--output", "type=image,name="+r+":"+tag+",push=true,registry.insecure=true",
			"--export-cache", "type=registry,ref="+r+":buildcache,mode=max,registry.insecure=true,ignore-error=true",
			"--import-cache", "type=registry,ref="+r+":buildcache,registry.insecure=true")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, progress), io.MultiWriter(&out, progress)
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("%v: %s", err, lastLines(out.String()))
		}
		return 0, nil
	}}

	d := &daemon{o: o}
	defer d.stop()
	measure := func(t tool) (sample, error) {
		var s sample
		if err := d.restart(ctx); err != nil {
			return s, err
		}
		repo := "zeitwork-bench/build-" + id.New().String()[24:]
		timed := func(tag string, progress io.Writer) (time.Duration, error) {
			start := time.Now()
			size, err := t.build(ctx, d.addr, repo, tag, progress)
			if err != nil {
				return 0, fmt.Errorf("%s, build %s: %w", t.name, tag, err)
			}
			if size > 0 {
				s.size = size
			}
			return time.Since(start), nil
		}
		var cold bytes.Buffer
		if s.cold, err = timed("cold", &cold); err != nil {
			return s, err
		}
		s.coldProfile = steps(cold.String())
		if o.keep != "" {
			os.WriteFile(filepath.Join(o.keep, "cold-"+strings.ReplaceAll(t.name, " ", "-")+"-"+repo[len(repo)-6:]+".txt"), cold.Bytes(), 0o644) //nolint:errcheck
		}
		if s.warm, err = timed("warm", io.Discard); err != nil {
			return s, err
		}
		if err := d.restart(ctx); err != nil {
			return s, err
		}
		var progress bytes.Buffer
		if s.nochange, err = timed("nochange", &progress); err != nil {
			return s, err
		}
		s.profile = steps(progress.String())
		fmt.Fprintf(os.Stderr, "bench: %s: cold %s, warm %s, no change %s\n", t.name, ms(s.cold), ms(s.warm), ms(s.nochange))
		return s, nil
	}

	if o.reuse != "" {
		return noChangeOnly(ctx, o, d, ours(nil), ref)
	}

	var a, b []sample
	for i := range o.runs {
		fmt.Fprintf(os.Stderr, "bench: run %d of %d\n", i+1, o.runs)
		// The two take turns going first: a second build of the same
		// lockfile can find the package registry's path warmer.
		var sa, sb sample
		var err error
		if (i%2 == 1) != o.reverse {
			if sb, err = measure(ref); err == nil {
				sa, err = measure(ours(nil))
			}
		} else {
			if sa, err = measure(ours(nil)); err == nil {
				sb, err = measure(ref)
			}
		}
		if err != nil {
			return err
		}
		a, b = append(a, sa), append(b, sb)
	}

	fmt.Printf("%s (%s), %d runs, min / median / max:\n\n", o.app, plan.Kind, o.runs)
	fmt.Printf("| build | zeitwork builder | buildctl (reference) | ratio (median) |\n|---|---|---|---|\n")
	row := func(name string, f func(sample) time.Duration) {
		x, y := durations(a, f), durations(b, f)
		fmt.Printf("| %s | %s | %s | %.2f |\n", name, spread(x), spread(y), float64(x[len(x)/2])/float64(y[len(y)/2]))
	}
	row("cold (fresh buildkitd, nothing cached)", func(s sample) time.Duration { return s.cold })
	row("warm (same buildkitd, no change)", func(s sample) time.Duration { return s.warm })
	row("no change, registry cache only (fresh buildkitd)", func(s sample) time.Duration { return s.nochange })
	fmt.Printf("\nimage size (compressed, as stored): %s\n", mb(a[0].size))
	st := slices.Clone(sourceTimes)
	slices.Sort(st)
	fmt.Printf("zeitwork builder's source step (fetch from the object store, unpack, detect), every build: %s\n", spread(st))
	fmt.Printf("\nno-change build, registry cache only, zeitwork builder (last run), BuildKit's steps:\n%s", a[len(a)-1].profile)
	fmt.Printf("\nthe same, buildctl:\n%s", b[len(b)-1].profile)
	fmt.Printf("\ncold build, zeitwork builder (last run):\n%s", a[len(a)-1].coldProfile)
	fmt.Printf("\ncold build, buildctl (last run):\n%s", b[len(b)-1].coldProfile)

	if o.before != "" {
		df, err := os.ReadFile(o.before)
		if err != nil {
			return err
		}
		if err := d.restart(ctx); err != nil {
			return err
		}
		start := time.Now()
		size, err := ours(df).build(ctx, d.addr, "zeitwork-bench/before-"+id.New().String()[24:], "1", io.Discard)
		if err != nil {
			return fmt.Errorf("build %s: %w", o.before, err)
		}
		fmt.Printf("\n%s: image size %s (cold build %s)\n", o.before, mb(size), ms(time.Since(start)))
	}
	return nil
}

var (
	stepName = regexp.MustCompile(`^#(\d+) (\[.*|[a-z].*)$`)
	stepDone = regexp.MustCompile(`^#(\d+) (DONE|CACHED)(?: ([0-9.]+)s)?$`)
)

// steps reads BuildKit's plain progress and lists each step with what it
// took, slowest first: where a build's time goes.
func steps(progress string) string {
	names := map[string]string{}
	took := map[string]float64{}
	var order []string
	sc := bufio.NewScanner(strings.NewReader(progress))
	for sc.Scan() {
		line := sc.Text()
		if m := stepName.FindStringSubmatch(line); m != nil {
			if _, ok := names[m[1]]; !ok {
				names[m[1]] = m[2]
				order = append(order, m[1])
			}
		}
		if m := stepDone.FindStringSubmatch(line); m != nil && m[3] != "" {
			f, _ := strconv.ParseFloat(m[3], 64)
			took[m[1]] = f
		}
	}
	slices.SortStableFunc(order, func(x, y string) int {
		switch {
		case took[x] > took[y]:
			return -1
		case took[x] < took[y]:
			return 1
		}
		return 0
	})
	var b strings.Builder
	for _, n := range order {
		if took[n] >= 0.01 {
			fmt.Fprintf(&b, "  %6.2fs  %s\n", took[n], names[n])
		}
	}
	if b.Len() == 0 {
		return "  (no step took 10 ms)\n"
	}
	return b.String()
}

func durations(s []sample, f func(sample) time.Duration) []time.Duration {
	var d []time.Duration
	for _, x := range s {
		d = append(d, f(x))
	}
	slices.Sort(d)
	return d
}

func spread(d []time.Duration) string {
	return fmt.Sprintf("%s / %s / %s", ms(d[0]), ms(d[len(d)/2]), ms(d[len(d)-1]))
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// sourceTimes are how long the zeitwork builder's source step took, each
// build: fetch, unpack, detect.
var sourceTimes []time.Duration

// objectStore is the object store of scripts/deps.sh (its S3_* variables).
func objectStore() (*minio.Client, string, error) {
	endpoint := os.Getenv("S3_ENDPOINT")
	if endpoint == "" {
		return nil, "", fmt.Errorf("S3_ENDPOINT is not set (eval \"$(scripts/deps.sh env)\")")
	}
	host, secure := strings.TrimPrefix(endpoint, "http://"), false
	if strings.HasPrefix(endpoint, "https://") {
		host, secure = strings.TrimPrefix(endpoint, "https://"), true
	}
	c, err := minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(os.Getenv("S3_ACCESS_KEY_ID"), os.Getenv("S3_SECRET_ACCESS_KEY"), ""),
		Secure: secure, Region: os.Getenv("S3_REGION"),
	})
	return c, os.Getenv("S3_BUCKET"), err
}

// upload stores dir as a gzipped tarball, as `zeitwork deploy` does.
func upload(ctx context.Context, s3 *minio.Client, bucket, dir string) (string, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	key := "bench/build-" + id.New().String() + ".tar.gz"
	_, err := s3.PutObject(ctx, bucket, key, &buf, int64(buf.Len()), minio.PutObjectOptions{ContentType: "application/gzip"})
	return key, err
}

// noChangeOnly times the no-change build against the registry cache of an
// earlier run's repository, on a fresh buildkitd each time, alternating the
// two tools.
func noChangeOnly(ctx context.Context, o options, d *daemon, tools ...tool) error {
	times := make([][]time.Duration, len(tools))
	profiles := make([]string, len(tools))
	for i := range o.runs {
		for j, t := range tools {
			if err := d.restart(ctx); err != nil {
				return err
			}
			var progress bytes.Buffer
			start := time.Now()
			if _, err := t.build(ctx, d.addr, o.reuse, fmt.Sprintf("nochange-%d-%d", i, j), &progress); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			took := time.Since(start)
			times[j] = append(times[j], took)
			profiles[j] = steps(progress.String())
			if o.keep != "" {
				os.WriteFile(filepath.Join(o.keep, fmt.Sprintf("nochange-%d-%d.txt", i, j)), progress.Bytes(), 0o644) //nolint:errcheck
			}
			fmt.Fprintf(os.Stderr, "bench: %s: no change %s\n", t.name, ms(took))
		}
	}
	fmt.Printf("no change, registry cache of %s only (fresh buildkitd), %d runs, min / median / max:\n\n", o.reuse, o.runs)
	fmt.Printf("| build | zeitwork builder | buildctl (reference) | ratio (median) |\n|---|---|---|---|\n")
	x, y := slices.Sorted(slices.Values(times[0])), slices.Sorted(slices.Values(times[1]))
	fmt.Printf("| no change, registry cache only | %s | %s | %.2f |\n", spread(x), spread(y), float64(x[len(x)/2])/float64(y[len(y)/2]))
	st := slices.Sorted(slices.Values(sourceTimes))
	fmt.Printf("\nzeitwork builder's source step (fetch from the object store, unpack, detect): %s\n", spread(st))
	for j, t := range tools {
		fmt.Printf("\n%s, BuildKit's steps (last run):\n%s", t.name, profiles[j])
	}
	return nil
}
