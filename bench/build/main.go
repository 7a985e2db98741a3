// Command build times image builds through Zeitwork's builder
// (internal/builder: BuildKit's Go client, push, registry cache) against
// the reference, BuildKit's own CLI (buildctl) with the same options, on
// the same buildkitd and registry, in one run:
//
//   - cold: nothing cached, neither locally nor in the registry;
//   - rebuild with no change;
//   - rebuild with one source file changed.
//
// `docker build` would be the natural reference, but no Docker engine runs
// on these machines. Run with bench/build/run.sh.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	bk "github.com/moby/buildkit/client"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/id"
)

func main() {
	reg := flag.String("registry", "127.0.0.1:25000", "registry")
	addr := flag.String("buildkit", "unix:///run/zeitwork-dev/buildkitd.sock", "buildkitd")
	buildctl := flag.String("buildctl", "", "path to buildctl")
	flag.Parse()
	if err := run(*reg, *addr, *buildctl); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// The app: a base image with a shell (busybox, built here: nothing can be
// pulled), a dependency step that is slow and cacheable, and a source step.
const dockerfile = `FROM %s
WORKDIR /app
COPY deps.txt .
RUN i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo deps installed > /deps.done
COPY src/ ./src/
RUN i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; cat src/* > /app/bundle.txt
CMD ["cat", "/app/bundle.txt"]
`

func run(reg, addr, buildctl string) error {
	ctx := context.Background()
	kit := builder.BuildKit{Addr: addr}
	registry := builder.Registry{Host: reg, Insecure: true}
	base, err := shellBase(ctx, kit, registry)
	if err != nil {
		return fmt.Errorf("base image: %w", err)
	}

	type result struct{ cold, same, changed time.Duration }
	measure := func(build func(dir, repo, tag string) error) (result, error) {
		var r result
		dir, err := os.MkdirTemp("", "zw-bench-build-")
		if err != nil {
			return r, err
		}
		defer os.RemoveAll(dir)
		write := func(p, content string) {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)     //nolint:errcheck
			os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644) //nolint:errcheck
		}
		write("Dockerfile", fmt.Sprintf(dockerfile, base))
		write("deps.txt", "left-pad 1.3.0\n")
		for i := range 20 {
			write(fmt.Sprintf("src/file%02d.js", i), fmt.Sprintf("export const f%d = %d;\n", i, i))
		}
		repo := "zeitwork-bench/build-" + id.New().String()[24:]
		if err := prune(ctx, addr); err != nil {
			return r, err
		}
		timed := func(tag string) (time.Duration, error) {
			start := time.Now()
			err := build(dir, repo, tag)
			return time.Since(start), err
		}
		if r.cold, err = timed("1"); err != nil {
			return r, err
		}
		if r.same, err = timed("2"); err != nil {
			return r, err
		}
		write("src/file07.js", "export const f7 = 'changed';\n")
		r.changed, err = timed("3")
		return r, err
	}

	ours, err := measure(func(dir, repo, tag string) error {
		df, _ := os.ReadFile(filepath.Join(dir, "Dockerfile"))
		_, err := kit.Build(ctx, builder.Request{ContextDir: dir, Dockerfile: df, Repository: repo, Tag: tag, Registry: registry}, io.Discard)
		return err
	})
	if err != nil {
		return fmt.Errorf("zeitwork builder: %w", err)
	}
	ref, err := measure(func(dir, repo, tag string) error {
		r := reg + "/" + repo
		cmd := exec.Command(buildctl, "--addr", addr, "build",
			"--frontend", "dockerfile.v0", "--local", "context="+dir, "--local", "dockerfile="+dir,
			"--output", "type=image,name="+r+":"+tag+",push=true,registry.insecure=true",
			"--export-cache", "type=registry,ref="+r+":buildcache,mode=max,registry.insecure=true",
			"--import-cache", "type=registry,ref="+r+":buildcache,registry.insecure=true")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %s", err, lastLines(out.String()))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buildctl: %w", err)
	}
	fmt.Printf("| build | zeitwork builder | buildctl (reference) |\n|---|---|---|\n")
	fmt.Printf("| cold (no local or registry cache) | %s | %s |\n", ms(ours.cold), ms(ref.cold))
	fmt.Printf("| rebuild, no change | %s | %s |\n", ms(ours.same), ms(ref.same))
	fmt.Printf("| rebuild, one source file changed | %s | %s |\n", ms(ours.changed), ms(ref.changed))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

func prune(ctx context.Context, addr string) error {
	c, err := bk.New(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Prune(ctx, nil, bk.PruneAll)
}

func shellBase(ctx context.Context, kit builder.BuildKit, reg builder.Registry) (string, error) {
	dir, err := os.MkdirTemp("", "zw-bench-base-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("%w (apt install busybox-static)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), busybox, 0o755); err != nil {
		return "", err
	}
	img, err := kit.Build(ctx, builder.Request{
		ContextDir: dir, Dockerfile: []byte("FROM scratch\nCOPY busybox /bin/sh\nCOPY busybox /bin/cat\n"),
		Repository: "zeitwork-bench/busybox-sh", Tag: "1", Registry: reg,
	}, io.Discard)
	if err != nil {
		return "", err
	}
	return img.Repository + "@" + img.Digest, nil
}
