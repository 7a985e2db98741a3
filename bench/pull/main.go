// Command pull times an image's first pull and create on a node, as a
// deploy of an app on a new base image meets it: the runtime with user
// namespaces (Pull re-owns the layers as it unpacks them, see
// internal/runtime/remap.go) against the reference, containerd's own pull
// and unpack as the runtime does it without user namespaces. Each round
// uses fresh containerd namespaces, so nothing is unpacked yet; the
// image's content is fetched once before the rounds (containerd's content
// store is shared by namespaces), so both sides unpack from local content.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/benchnode"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

func main() {
	ctrd := flag.String("containerd", "/run/zeitwork-dev/containerd.sock", "containerd socket")
	reg := flag.String("registry", "127.0.0.1:25000", "registry (plain HTTP)")
	image := flag.String("image", "", "image to pull (default: the local node:22 base image)")
	rounds := flag.Int("rounds", 3, "rounds, each timing both sides")
	flag.Parse()
	if *image == "" {
		*image = *reg + "/library/node:22-bookworm-slim"
	}
	if err := run(*ctrd, *reg, *image, *rounds); err != nil {
		log.Fatal(err)
	}
}

type timing struct{ pull, create time.Duration }

func run(ctrd, reg, image string, rounds int) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "zw-bench-pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tag := id.New().String()[24:]
	if _, err := pullCreate(ctx, ctrd, reg, image, work, "zw-bench-pull-"+tag+"-fetch", runtime.UserNSOff); err != nil {
		return fmt.Errorf("fetch the image: %w", err)
	}
	var ours, ref []timing
	for i := range rounds {
		// Alternate which side goes first: the second finds the page
		// cache warmer.
		sides := []string{runtime.UserNSOn, runtime.UserNSOff}
		if i%2 == 1 {
			slices.Reverse(sides)
		}
		for _, mode := range sides {
			t, err := pullCreate(ctx, ctrd, reg, image, work, fmt.Sprintf("zw-bench-pull-%s-%d-%s", tag, i, mode), mode)
			if err != nil {
				return err
			}
			if mode == runtime.UserNSOn {
				ours = append(ours, t)
			} else {
				ref = append(ref, t)
			}
			fmt.Fprintf(os.Stderr, "round %d, user namespaces %s: pull %s, create %s\n", i+1, mode, t.pull.Round(time.Millisecond), t.create.Round(time.Millisecond))
		}
	}
	gz := "Go's gzip"
	if p, err := exec.LookPath("igzip"); err == nil && os.Getenv("CONTAINERD_DISABLE_IGZIP") == "" {
		gz = p
	}
	fmt.Printf("First pull and create of %s, %d rounds (min / median / max); re-owned layers decompressed by %s\n\n", image, rounds, gz)
	fmt.Println("| step | user namespaces (layers re-owned) | containerd's pull and unpack (no user namespace) | ratio (median) |")
	fmt.Println("|---|---|---|---|")
	row := func(name string, f func(timing) time.Duration) {
		a, b := stats(ours, f), stats(ref, f)
		fmt.Printf("| %s | %s | %s | %.2f |\n", name, fmtStats(a), fmtStats(b), a[1].Seconds()/b[1].Seconds())
	}
	row("pull", func(t timing) time.Duration { return t.pull })
	row("create", func(t timing) time.Duration { return t.create })
	row("pull + create", func(t timing) time.Duration { return t.pull + t.create })
	return nil
}

// pullCreate pulls image into a new namespace and creates an instance of
// it, and removes the namespace after.
func pullCreate(ctx context.Context, ctrd, reg, image, work, ns string, mode string) (timing, error) {
	defer benchnode.DeleteNamespace(ctrd, ns)
	rt, err := runtime.New(ctx, runtime.Config{
		Address: ctrd, Namespace: ns, Owner: "bench", UserNS: mode,
		LogDir: filepath.Join(work, "logs"), PlainHTTPRegistries: []string{reg},
	})
	if err != nil {
		return timing{}, err
	}
	defer rt.Close()
	start := time.Now()
	if err := rt.Pull(ctx, image, nil); err != nil {
		return timing{}, err
	}
	pulled := time.Now()
	spec := runtime.Spec{InstanceID: id.New(), Image: image, Port: benchnode.FreePort(), HostNetwork: true, MemoryMB: 64, CPUMillis: 100}
	if err := rt.Create(ctx, spec); err != nil {
		return timing{}, err
	}
	t := timing{pull: pulled.Sub(start), create: time.Since(pulled)}
	if err := rt.Stop(ctx, spec.InstanceID, time.Second); err != nil {
		return timing{}, err
	}
	return t, nil
}

func stats(ts []timing, f func(timing) time.Duration) [3]time.Duration {
	ds := make([]time.Duration, len(ts))
	for i, t := range ts {
		ds[i] = f(t)
	}
	slices.Sort(ds)
	return [3]time.Duration{ds[0], ds[len(ds)/2], ds[len(ds)-1]}
}

func fmtStats(s [3]time.Duration) string {
	r := func(d time.Duration) string {
		if d < time.Second {
			return fmt.Sprintf("%d ms", d.Milliseconds())
		}
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return r(s[0]) + " / " + r(s[1]) + " / " + r(s[2])
}
