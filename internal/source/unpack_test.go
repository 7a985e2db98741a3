package source_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/source"
)

func TestUnpackRefuses(t *testing.T) {
	// An absolute path that, if written, would land where the test can see it.
	abs := filepath.Join(t.TempDir(), "abs-escape")
	small := source.Limits{MaxBytes: 1 << 20, MaxFileBytes: 1 << 10, MaxFiles: 5}
	for _, tc := range []struct {
		name    string
		entries []entry
		lim     source.Limits
		want    error
	}{
		{"dot-dot", []entry{file("../evil", "x")}, source.Limits{}, source.ErrUnsafePath},
		{"dot-dot inside a path", []entry{file("repo/a/../../evil", "x")}, source.Limits{}, source.ErrUnsafePath},
		{"dot-dot to the outside dir", []entry{file("../outside/secret", "pwned")}, source.Limits{}, source.ErrUnsafePath},
		{"absolute /etc/passwd", []entry{file("/etc/passwd", "root::0:0::/:/bin/sh\n")}, source.Limits{}, source.ErrUnsafePath},
		{"absolute path", []entry{file(abs, "x")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink to /etc, then a write through it", []entry{symlink("link", "/etc"), file("link/passwd", "x")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink out by dot-dot", []entry{dir("r/"), symlink("r/a", "../../x")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink to the outside dir, then a write", []entry{symlink("o", "../outside"), file("o/secret", "pwned")}, source.Limits{}, source.ErrUnsafePath},
		{"in-tree symlink, then a write through it", []entry{dir("sub/"), symlink("d", "sub"), file("d/x", "x")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink escaping once the top directory is stripped",
			[]entry{dir("acme-app-1234567/"), symlink("acme-app-1234567/up", "../x")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink escaping through another symlink",
			// deep/a/b/s is the root; t lexically stays inside (deep/a),
			// but really climbs two levels above the root.
			[]entry{dir("deep/a/b/"), symlink("deep/a/b/s", "../../.."), symlink("t", "deep/a/b/s/../..")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink climbing from a link to the root",
			[]entry{dir("a/b/"), symlink("a/b/s", "../.."), symlink("t", "a/b/s/..")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink through an absolute symlink",
			[]entry{symlink("etc", "/etc"), symlink("p", "etc/passwd")}, source.Limits{}, source.ErrUnsafePath},
		{"symlink loop", []entry{symlink("a", "b"), symlink("b", "a")}, source.Limits{}, source.ErrUnsafePath},
		{"hard link out by dot-dot", []entry{hardlink("h", "../outside/secret")}, source.Limits{}, source.ErrUnsafePath},
		{"hard link to an absolute path", []entry{hardlink("h", "/etc/passwd")}, source.Limits{}, source.ErrUnsafePath},
		{"hard link to a symlink", []entry{file("f", "x"), symlink("s", "f"), hardlink("h", "s")}, source.Limits{}, source.ErrUnsafePath},
		{"hard link to a directory", []entry{dir("d/"), hardlink("h", "d")}, source.Limits{}, source.ErrUnsafePath},
		{"hard link to a missing file", []entry{hardlink("h", "nope")}, source.Limits{}, source.ErrUnsafePath},
		{"character device", []entry{special("null", tar.TypeChar)}, source.Limits{}, source.ErrUnsupportedEntry},
		{"block device", []entry{special("sda", tar.TypeBlock)}, source.Limits{}, source.ErrUnsupportedEntry},
		{"fifo", []entry{special("pipe", tar.TypeFifo)}, source.Limits{}, source.ErrUnsupportedEntry},
		{"file over the size limit", []entry{file("big", strings.Repeat("x", 2<<10))}, small, source.ErrTooLarge},
		{"too many files", []entry{file("1", ""), file("2", ""), file("3", ""), file("4", ""), file("5", ""), file("6", "")}, small, source.ErrTooManyFiles},
		{"over the total size", []entry{zeros("a", 1000), zeros("b", 1000), zeros("c", 1000)}, source.Limits{MaxBytes: 2500}, source.ErrTooLarge},
		{"symlink over an earlier file", []entry{file("f", "x"), symlink("f", "g")}, source.Limits{}, source.ErrInvalidArchive},
		{"too deep", []entry{file(strings.Repeat("a/", 300)+"f", "")}, source.Limits{}, source.ErrInvalidArchive},
		{"empty archive", nil, source.Limits{}, source.ErrInvalidArchive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			passwd, _ := os.ReadFile("/etc/passwd")
			sb := newSandbox(t)
			_, err := source.Unpack(t.Context(), bytes.NewReader(tgz(t, tc.entries...)), sb.dst, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Log(err)
			if len(tc.entries) > 0 {
				var ee *source.EntryError
				if !errors.As(err, &ee) {
					t.Errorf("err = %v (%T), want an *EntryError naming the entry", err, err)
				}
			}
			sb.assertContained(t)
			if _, err := os.Lstat(abs); err == nil {
				t.Errorf("%s was written", abs)
			}
			if now, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(now, passwd) {
				t.Fatal("/etc/passwd changed")
			}
		})
	}
}

func TestUnpackNotAnArchive(t *testing.T) {
	valid := tgz(t, file("a", strings.Repeat("hello ", 1000)))
	for name, data := range map[string][]byte{
		"text":           []byte("this is not an archive, just some words that fill more than a tar block " + strings.Repeat(".", 600)),
		"truncated gzip": valid[:len(valid)/2],
		"gzip, not tar":  gzipped(t, []byte(strings.Repeat("not a tar ", 200))),
	} {
		t.Run(name, func(t *testing.T) {
			sb := newSandbox(t)
			_, err := source.Unpack(t.Context(), bytes.NewReader(data), sb.dst, source.Limits{})
			if !errors.Is(err, source.ErrInvalidArchive) {
				t.Fatalf("err = %v, want ErrInvalidArchive", err)
			}
			sb.assertContained(t)
		})
	}
}

// A gzip bomb: a few kilobytes that inflate to 64 MiB of zeros. Unpack must
// stop at the limit having written no more than it, and without reading the
// rest of the stream.
func TestUnpackGzipBomb(t *testing.T) {
	const limit = 4 << 20
	for name, bomb := range map[string][]byte{
		"one large file":    gzipBomb(t, 1, 64),
		"many medium files": gzipBomb(t, 64, 1),
	} {
		t.Run(name, func(t *testing.T) {
			sb := newSandbox(t)
			in := &countingReader{r: bytes.NewReader(bomb)}
			stats, err := source.Unpack(t.Context(), in, sb.dst, source.Limits{MaxBytes: limit})
			if !errors.Is(err, source.ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if stats.Bytes > limit {
				t.Errorf("wrote %d bytes, limit %d", stats.Bytes, limit)
			}
			if onDisk := du(t, sb.dst); onDisk > limit {
				t.Errorf("%d bytes on disk, limit %d", onDisk, limit)
			}
			if in.n > int64(len(bomb))/2 {
				t.Errorf("read %d of %d compressed bytes: did not stop at the limit", in.n, len(bomb))
			}
			sb.assertContained(t)
		})
	}
}

// gzipBomb returns a tar.gz of files of mib MiB of zeros each. It is made of
// concatenated gzip members (which gzip readers take as one stream), so the
// one compressed MiB of zeros is reused rather than compressing it all.
func gzipBomb(t testing.TB, files, mib int) []byte {
	t.Helper()
	zeroMiB := gzipped(t, make([]byte, 1<<20))
	var out bytes.Buffer
	for i := range files {
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%03d", i), Mode: 0o644, Size: int64(mib) << 20, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		out.Write(gzipped(t, hdr.Bytes())) // the body follows: no Close
		for range mib {
			out.Write(zeroMiB)
		}
	}
	out.Write(gzipped(t, make([]byte, 1024))) // end of archive
	return out.Bytes()
}

// A repository as GitHub serves it: the pax global header with the commit,
// everything under owner-repo-sha7/, nested directories, executables,
// relative in-tree symlinks (also through other symlinks) and a hard link.
func TestUnpackRepository(t *testing.T) {
	archive := tgz(t,
		entry{name: "pax_global_header", typ: tar.TypeXGlobalHeader, body: "1a2b3c4d5e6f"},
		dir("acme-app-1a2b3c4/"),
		file("acme-app-1a2b3c4/README.md", "# app\n"),
		dir("acme-app-1a2b3c4/bin/"),
		exe("acme-app-1a2b3c4/bin/start", "#!/bin/sh\nexec app\n"),
		file("acme-app-1a2b3c4/src/deep/nested/main.go", "package main\n"), // parents implied
		symlink("acme-app-1a2b3c4/src/deep/readme", "../../README.md"),
		symlink("acme-app-1a2b3c4/code", "src/deep"),
		symlink("acme-app-1a2b3c4/main.go", "code/nested/main.go"),
		symlink("acme-app-1a2b3c4/dangling", "not/there"),
		symlink("acme-app-1a2b3c4/acme-app-1a2b3c4", "."),
		hardlink("acme-app-1a2b3c4/bin/run", "acme-app-1a2b3c4/bin/start"),
	)
	sb := newSandbox(t)
	stats, err := source.Unpack(t.Context(), bytes.NewReader(archive), sb.dst, source.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"README.md 644 \"# app\\n\"",
		"acme-app-1a2b3c4 -> .",
		"bin/",
		"bin/run 755 \"#!/bin/sh\\nexec app\\n\"",
		"bin/start 755 \"#!/bin/sh\\nexec app\\n\"",
		"code -> src/deep",
		"dangling -> not/there",
		"main.go -> code/nested/main.go",
		"src/",
		"src/deep/",
		"src/deep/nested/",
		"src/deep/nested/main.go 644 \"package main\\n\"",
		"src/deep/readme -> ../../README.md",
	}, "\n")
	if got := tree(t, sb.dst); got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(sb.dst, "main.go")); err != nil || string(b) != "package main\n" {
		t.Errorf("main.go through two links: %q, %v", b, err)
	}
	wantStats := source.Stats{Files: 3, Dirs: 2, Symlinks: 5, HardLinks: 1, Bytes: 6 + 19 + 13, StrippedPrefix: "acme-app-1a2b3c4"}
	if stats != wantStats {
		t.Errorf("stats = %+v, want %+v", stats, wantStats)
	}
	sb.assertContained(t)
}

// The top-level directory is stripped only when every entry shares it and
// the archive does not name its own root.
func TestUnpackTopDirectory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"files at the root (an upload)", []entry{file("package.json", "{}"), file("src/index.js", "")},
			"package.json 644 \"{}\"\nsrc/\nsrc/index.js 644 \"\""},
		{"no directory entry for the prefix", []entry{file("x-y-1/a", "a"), file("x-y-1/b/c", "c")},
			"a 644 \"a\"\nb/\nb/c 644 \"c\""},
		{"a child named like the prefix", []entry{file("p/p/f", "f"), file("p/g", "g")},
			"g 644 \"g\"\np/\np/f 644 \"f\""},
		{"a single file at the root", []entry{file("Dockerfile", "FROM scratch\n")},
			"Dockerfile 644 \"FROM scratch\\n\""},
		{"one directory, root named (tar -C dir .)", []entry{dir("./"), dir("./apps/"), file("./apps/web", "w")},
			"apps/\napps/web 644 \"w\""},
		{"two top-level directories", []entry{file("a/x", ""), file("b/y", "")},
			"a/\na/x 644 \"\"\nb/\nb/y 644 \"\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			if _, err := source.Unpack(t.Context(), bytes.NewReader(tgz(t, tc.entries...)), sb.dst, source.Limits{}); err != nil {
				t.Fatal(err)
			}
			if got := tree(t, sb.dst); got != tc.want {
				t.Errorf("tree:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestUnpackPlainTar(t *testing.T) {
	sb := newSandbox(t)
	if _, err := source.Unpack(t.Context(), bytes.NewReader(rawTar(t, file("a", "b"))), sb.dst, source.Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, sb.dst); got != `a 644 "b"` {
		t.Errorf("tree = %s", got)
	}
}

// git archive writes exactly what GitHub's tarball endpoint serves.
func TestUnpackGitArchive(t *testing.T) {
	repo := t.TempDir()
	write := func(name, body string, mode os.FileMode) {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("package.json", `{"scripts":{"start":"node server.js"}}`, 0o644)
	write("server.js", "console.log('hi')\n", 0o644)
	write("scripts/build.sh", "#!/bin/sh\n", 0o755)
	write("lib/a/b.js", "module.exports = 1\n", 0o644)
	if err := os.Symlink("../server.js", filepath.Join(repo, "lib", "server.js")); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-q", "-m", "initial")
	sha := strings.TrimSpace(git(t, repo, "rev-parse", "--short=7", "HEAD"))
	archive := git(t, repo, "archive", "--format=tar.gz", "--prefix=acme-app-"+sha+"/", "HEAD")

	sb := newSandbox(t)
	stats, err := source.Unpack(t.Context(), strings.NewReader(archive), sb.dst, source.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.StrippedPrefix != "acme-app-"+sha {
		t.Errorf("stripped %q", stats.StrippedPrefix)
	}
	want := strings.Join([]string{
		"lib/", "lib/a/", `lib/a/b.js 644 "module.exports = 1\n"`, "lib/server.js -> ../server.js",
		`package.json 644 "{\"scripts\":{\"start\":\"node server.js\"}}"`,
		"scripts/", `scripts/build.sh 755 "#!/bin/sh\n"`,
		`server.js 644 "console.log('hi')\n"`,
	}, "\n")
	if got := tree(t, sb.dst); got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}
}

func TestUnpackNeedsEmptyDir(t *testing.T) {
	dst := t.TempDir()
	if err := os.WriteFile(filepath.Join(dst, "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := source.Unpack(t.Context(), bytes.NewReader(tgz(t, file("a", ""))), dst, source.Limits{}); err == nil {
		t.Fatal("unpacked into a non-empty directory")
	}
}

func TestUnpackCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sb := newSandbox(t)
	_, err := source.Unpack(ctx, bytes.NewReader(tgz(t, zeros("a", 1<<20))), sb.dst, source.Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// du adds up the sizes of the regular files under dir.
func du(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
