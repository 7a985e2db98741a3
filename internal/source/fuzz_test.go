package source_test

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/zeitwork/zeitwork/internal/source"
)

// FuzzUnpack: whatever the bytes, Unpack returns without panicking, writes
// nothing outside dst and leaves no symlink that leads out of it.
func FuzzUnpack(f *testing.F) {
	for _, es := range [][]entry{
		{dir("r/"), file("r/a", "hello"), exe("r/b/run", "#!/bin/sh\n"), symlink("r/l", "a"), hardlink("r/h", "r/a")},
		{file("../evil", "x")},
		{symlink("link", "/etc"), file("link/passwd", "x")},
		{dir("deep/a/b/"), symlink("deep/a/b/s", "../../.."), symlink("t", "deep/a/b/s/../..")},
		{symlink("o", "../outside"), file("o/secret", "pwned")},
		{dir("./"), file("./x", "y")},
		{special("null", tar.TypeChar)},
	} {
		f.Add(rawTar(f, es...))
		f.Add(tgz(f, es...))
	}
	lim := source.Limits{MaxBytes: 1 << 20, MaxFileBytes: 256 << 10, MaxFiles: 200}
	f.Fuzz(func(t *testing.T, data []byte) {
		sb := newSandbox(t)
		_, _ = source.Unpack(t.Context(), bytes.NewReader(data), sb.dst, lim)
		sb.assertContained(t)
	})
}
