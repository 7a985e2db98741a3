package network

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestRemoveNetnsWithPrefixUnpinsOnlyThoseNamespaces(t *testing.T) {
	dir := "/run/netns"
	tag := "zwt" + id.New().String()[30:]
	gone := []string{tag + "-a-1", tag + "-a-2"}
	kept := tag + "-b-1"
	for _, name := range append(gone, kept) {
		path := filepath.Join(dir, name)
		if err := createNetns(path, func() error { return nil }); err != nil {
			testenv.Unavailable(t, "netns", err)
		}
		t.Cleanup(func() { removeNetns(path) })
	}

	if err := RemoveNetnsWithPrefix(dir, tag+"-a-"); err != nil {
		t.Fatalf("RemoveNetnsWithPrefix: %v", err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range gone {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (stat: %v)", name, err)
		}
		if strings.Contains(string(mounts), filepath.Join(dir, name)+" ") {
			t.Errorf("%s is still mounted", name)
		}
	}
	fd, err := openNetns(filepath.Join(dir, kept))
	if err != nil {
		t.Fatalf("the namespace without the prefix went too: %v", err)
	}
	unix.Close(fd)

	if err := RemoveNetnsWithPrefix(dir, ""); err == nil {
		t.Error("an empty prefix was taken: it would remove every namespace on the machine")
	}
	if _, err := os.Stat(filepath.Join(dir, kept)); err != nil {
		t.Errorf("after the refused empty prefix: %v", err)
	}
}
