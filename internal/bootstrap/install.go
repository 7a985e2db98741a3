package bootstrap

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// The CNI plugins builds' RUN network uses (see deploy/dev's conflist).
var cniPlugins = []string{"bridge", "host-local", "loopback"}

// releaseFile is one file of release: besides the zeitwork binary.
type releaseFile struct {
	field string // release.buildkitd, release.cni_plugins/bridge
	path  string // resolved against cluster.yaml's directory
}

// releaseFiles are the release files cluster.yaml names and some node
// needs.
func (c *Cluster) releaseFiles() []releaseFile {
	var f []releaseFile
	add := func(field, p string, needed bool) {
		if p != "" && needed {
			f = append(f, releaseFile{field, c.Path(p)})
		}
	}
	builder := slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Has(RoleBuilder) })
	kata := slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Has(RoleWorker) && n.Runtime == RuntimeKata })
	worker := slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Has(RoleWorker) })
	r := c.Release
	add("release.logwriter", r.LogWriter, worker)
	add("release.buildkitd", r.Buildkitd, builder)
	add("release.buildctl", r.Buildctl, builder)
	if r.CNIPlugins != "" && builder {
		for _, p := range cniPlugins {
			add("release.cni_plugins/"+p, filepath.Join(r.CNIPlugins, p), true)
		}
	}
	add("release.minio", r.MinIO, c.S3.MinIO != nil)
	add("release.registry", r.Registry, c.Registry.Node != "")
	add("release.kata", r.Kata, kata)
	return f
}

// checkRelease reads the release files, and when release.checksums is
// set, refuses any whose digest it does not list: a corrupted or
// substituted download is found before it is installed anywhere.
func (b *Bootstrap) checkRelease(context.Context) (Status, error) {
	c := b.Cluster
	files := c.releaseFiles()
	b.release = map[string][]byte{}
	var sums map[string]string
	if c.Release.Checksums != "" {
		var err error
		if sums, err = readChecksums(c.Path(c.Release.Checksums)); err != nil {
			return Status{}, fmt.Errorf("release.checksums: %w", err)
		}
	}
	var problems []string
	check := func(field, p string, data []byte) {
		if sums == nil {
			return
		}
		want, ok := sums[filepath.Base(p)]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: %s is not listed in %s", field, filepath.Base(p), c.Release.Checksums))
		case want != digest(data):
			problems = append(problems, fmt.Sprintf("%s: %s has sha256 %s, but %s says %s: refusing to install it",
				field, p, digest(data)[:16], c.Release.Checksums, want[:min(16, len(want))]))
		}
	}
	check("release.binary", c.Release.Binary, b.binary)
	for _, f := range files {
		raw, err := os.ReadFile(f.path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.field, err))
			continue
		}
		check(f.field, f.path, raw)
		b.release[f.field] = raw
	}
	if len(problems) > 0 {
		return Status{Detail: strings.Join(problems, "; ")}, nil
	}
	if len(files) == 0 {
		return Status{Done: true, Detail: "none besides the binary"}, nil
	}
	detail := fmt.Sprintf("%d files", len(files))
	if sums != nil {
		detail += ", each matching " + c.Release.Checksums
	}
	return Status{Done: true, Detail: detail}, nil
}

// readChecksums reads sha256sum's output format: "<hex>  <name>" (or
// "<hex> *<name>"), by the name's base.
func readChecksums(p string) (map[string]string, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		sum, name, ok := strings.Cut(l, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*")
		if !ok || len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" || name == "" {
			return nil, fmt.Errorf("line %d is not \"<sha256>  <file>\"", line)
		}
		sums[filepath.Base(name)] = strings.ToLower(sum)
	}
	return sums, sc.Err()
}

// installSteps put the third-party software node n runs in place: each a
// file step (checked by digest, so a second run writes nothing), or, when
// cluster.yaml does not give it, a check that it is already there.
func (b *Bootstrap) installSteps(n Node, h Host) []Step {
	c, r := b.Cluster, b.Cluster.Release
	var steps []Step
	if n.Has(RoleWorker) && r.LogWriter != "" {
		// Looked for at every instance start: no restart needed.
		steps = append(steps, fileStep(n.Name+": log writer "+LogWriterPath, h, []File{{Path: LogWriterPath, Mode: 0o755, Data: b.release["release.logwriter"]}}))
	}
	if n.Has(RoleWorker) && n.Runtime == RuntimeKata {
		if r.Kata == "" {
			steps = append(steps, missingStep(n.Name+": Kata Containers", h, KataShim,
				"release.kata is not set: set it to the Kata Containers static release tarball, or unpack that into /opt/kata and link its shim into /usr/local/bin by hand"))
		} else {
			steps = append(steps, kataStep(n.Name+": Kata Containers "+filepath.Base(r.Kata), h, b.release["release.kata"]))
		}
	}
	if n.Has(RoleBuilder) {
		if r.Buildkitd == "" {
			steps = append(steps, missingStep(n.Name+": buildkitd", h, BuildkitdPath,
				"release.buildkitd is not set: set it (and release.buildctl) to BuildKit's linux binaries, or put them in /usr/local/bin by hand"))
		} else {
			files := []File{{Path: BuildkitdPath, Mode: 0o755, Data: b.release["release.buildkitd"]}}
			if r.Buildctl != "" {
				files = append(files, File{Path: BuildctlPath, Mode: 0o755, Data: b.release["release.buildctl"]})
			}
			if r.CNIPlugins != "" {
				for _, p := range cniPlugins {
					files = append(files, File{Path: path.Join(ReleaseCNIDir, p), Mode: 0o755, Data: b.release["release.cni_plugins/"+p]})
				}
			}
			steps = append(steps, fileStep(n.Name+": buildkitd", h, files))
		}
	}
	if m := c.S3.MinIO; m != nil && m.Node == n.Name {
		steps = append(steps, fileStep(n.Name+": MinIO "+MinIOPath, h, []File{{Path: MinIOPath, Mode: 0o755, Data: b.release["release.minio"]}}))
	}
	if c.Registry.Node == n.Name {
		steps = append(steps, fileStep(n.Name+": registry "+RegistryPath, h, []File{{Path: RegistryPath, Mode: 0o755, Data: b.release["release.registry"]}}))
	}
	return steps
}

// kataStep unpacks the Kata release under /opt/kata, once per tarball:
// KataRelease records the digest of the one unpacked, and the shim is
// linked where containerd finds it.
func kataStep(name string, h Host, tarball []byte) Step {
	want := digest([]byte(digest(tarball) + "\n"))
	check := func(ctx context.Context) (Status, error) {
		have, err := h.SHA256s(ctx, []string{KataRelease, KataShimLink})
		if err != nil {
			return Status{}, err
		}
		switch {
		case have[0] == "":
			return Status{Detail: "to unpack into " + KataDir}, nil
		case have[0] != want:
			return Status{Detail: "another release is unpacked: to unpack this one into " + KataDir}, nil
		case have[1] == "":
			return Status{Detail: "to link " + KataShimLink}, nil
		}
		return Status{Done: true, Detail: "sha256 " + digest(tarball)[:16]}, nil
	}
	return Step{Name: name, Check: check, Apply: func(ctx context.Context) error {
		tmp := "/var/lib/zeitwork/bootstrap/kata-release.tar"
		if _, err := h.Install(ctx, tmp, tarball, 0o600); err != nil {
			return err
		}
		// Unpacked over what is there: the release's files are replaced,
		// and the marker written last says it completed.
		if err := h.Unpack(ctx, tmp, "/"); err != nil {
			return fmt.Errorf("unpack the Kata release: %w", err)
		}
		ok, err := h.Exist(ctx, []string{KataShim, KataConfig})
		if err != nil {
			return err
		}
		if !ok[0] || !ok[1] {
			return fmt.Errorf("the Kata release has no %s or %s: is release.kata the static release (kata-static-*.tar.*)?", KataShim, KataConfig)
		}
		if err := h.Link(ctx, KataShim, KataShimLink); err != nil {
			return err
		}
		_, err = h.Install(ctx, KataRelease, []byte(digest(tarball)+"\n"), 0o644)
		return err
	}}
}

// daemon is a third-party service bootstrap runs on a node: restarted
// when its binary or one of its files changed, and otherwise only started.
type daemon struct {
	unit     string
	files    []string // the rendered files it reads
	binaries []string // release files it runs, by field
}

// daemons are node n's, in the order they start.
func (c *Cluster) daemons(n Node) []daemon {
	var d []daemon
	if n.Has(RoleWorker) && n.Runtime == RuntimeKata {
		// containerd itself comes from apt; its configuration names the
		// kata runtime, and it reads it only when it starts.
		d = append(d, daemon{unit: "containerd.service", files: []string{ContainerdConfig}})
	}
	if m := c.S3.MinIO; m != nil && m.Node == n.Name {
		d = append(d, daemon{unit: "minio.service", files: []string{path.Join(UnitDir, "minio.service"), MinIOEnv}, binaries: []string{"release.minio"}})
	}
	if c.Registry.Node == n.Name && n.Name != "" {
		reg := daemon{unit: "registry.service", files: []string{path.Join(UnitDir, "registry.service"), RegistryConfig, RegistryEnv}, binaries: []string{"release.registry"}}
		if c.Secrets.RegistryTokenKeyEnv != "" {
			reg.files = append(reg.files, RegistryTokenCert)
		}
		d = append(d, reg)
	}
	if n.Has(RoleBuilder) {
		bk := daemon{unit: "buildkit.service", files: []string{path.Join(UnitDir, "buildkit.service"), BuildkitConfig, BuildkitNetFile, BuildkitCNIFile}}
		if c.Release.Buildkitd != "" {
			bk.binaries = []string{"release.buildkitd"}
		}
		d = append(d, bk)
	}
	return d
}

// daemonMarker is where a daemon's last start is recorded.
func daemonMarker(unit string) string {
	return path.Join(path.Dir(AppliedMarker), strings.TrimSuffix(unit, ".service")+".applied")
}

// daemonSteps start node n's daemons, restarting one only when what it
// runs changed: a new zeitwork binary is no reason to bounce the builds,
// the bucket or the registry.
func (b *Bootstrap) daemonSteps(n Node, h Host, rendered []File) []Step {
	var steps []Step
	for _, d := range b.Cluster.daemons(n) {
		var s strings.Builder
		for _, f := range d.binaries {
			fmt.Fprintf(&s, "%s %s\n", digest(b.release[f]), f)
		}
		var unrendered error
		for _, p := range d.files {
			i := slices.IndexFunc(rendered, func(f File) bool { return f.Path == p })
			if i < 0 {
				unrendered = fmt.Errorf("%s reads %s, which bootstrap does not render (a bug)", d.unit, p)
				continue
			}
			fmt.Fprintf(&s, "%s %s\n", digest(rendered[i].Data), p)
		}
		if unrendered != nil {
			steps = append(steps, Step{Name: n.Name + ": start " + d.unit, Check: func(context.Context) (Status, error) { return Status{}, unrendered }})
			continue
		}
		marker := []byte(s.String())
		steps = append(steps, Step{
			Name: n.Name + ": start " + d.unit,
			Check: func(ctx context.Context) (Status, error) {
				stopped, err := h.Stopped(ctx, []string{d.unit})
				if err != nil {
					return Status{}, err
				}
				have, err := h.SHA256s(ctx, []string{daemonMarker(d.unit)})
				if err != nil {
					return Status{}, err
				}
				switch {
				case have[0] != digest(marker) && have[0] != "":
					return Status{Detail: "its binary or configuration changed: to restart"}, nil
				case have[0] != digest(marker):
					return Status{Detail: "to (re)start with this configuration"}, nil
				case len(stopped) > 0:
					return Status{Detail: "not running"}, nil
				}
				return Status{Done: true, Detail: "running"}, nil
			},
			Apply: func(ctx context.Context) error {
				if err := h.RestartDaemons(ctx, []string{d.unit}); err != nil {
					return err
				}
				_, err := h.Install(ctx, daemonMarker(d.unit), marker, 0o644)
				return err
			},
		})
		if d.unit == "minio.service" {
			steps = append(steps, b.bucketStep(n, h))
		}
	}
	return steps
}

// bucketStep creates s3.minio's bucket, from the MinIO node itself.
func (b *Bootstrap) bucketStep(n Node, h Host) Step {
	s3 := b.Cluster.s3Access(b.values)
	return Step{
		Name: n.Name + ": MinIO bucket " + s3.Bucket,
		Check: func(ctx context.Context) (Status, error) {
			ok, err := h.Bucket(ctx, s3, false)
			if err != nil {
				return Status{}, err
			}
			if !ok {
				return Status{Detail: "to create at " + s3.Endpoint}, nil
			}
			return Status{Done: true, Detail: "at " + s3.Endpoint}, nil
		},
		Apply: func(ctx context.Context) error {
			_, err := h.Bucket(ctx, s3, true)
			return err
		},
	}
}
