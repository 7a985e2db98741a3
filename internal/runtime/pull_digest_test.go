package runtime_test

import (
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

// An image named by digest that is already on the node is not asked of the
// registry again: the digest names its content. A tag still is.
func TestPullByDigestHereAsksNoRegistry(t *testing.T) {
	e := newEnv(t)
	upstream, _ := neturl.Parse("http://" + e.reg)
	registry := httptest.NewServer(httputil.NewSingleHostReverseProxy(upstream))
	defer registry.Close()
	host := strings.TrimPrefix(registry.URL, "http://")
	r := e.runtime(t, func(c *runtime.Config) { c.PlainHTTPRegistries = []string{host} })
	ctx := ctxFor(t, time.Minute)

	tagged := host + strings.TrimPrefix(e.image, e.reg)
	if err := r.Pull(ctx, tagged, nil); err != nil {
		t.Fatal(err)
	}
	img, err := e.raw.GetImage(ctx, tagged)
	if err != nil {
		t.Fatal(err)
	}
	pinned := tagged[:strings.LastIndex(tagged, ":")] + "@" + img.Target().Digest.String()
	if err := r.Pull(ctx, pinned, nil); err != nil {
		t.Fatal(err)
	}

	registry.Close()
	if err := r.Pull(ctx, pinned, nil); err != nil {
		t.Fatalf("pulling a digest that is here asked the gone registry: %v", err)
	}
	if err := r.Pull(ctx, tagged, nil); err == nil {
		t.Fatal("pulling a tag with the registry gone succeeded: a tag must be asked for")
	}
	s := e.spec(t, nil)
	s.Image = pinned
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))
}
