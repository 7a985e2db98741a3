package certs

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3/acme"

	"github.com/zeitwork/zeitwork/internal/cloudflare"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Two challenges for one record name (d and *.d) are solved one after the
// other: the second record appears only once the first is cleaned up.
func TestDNS01SolvesSameNameChallengesInTurn(t *testing.T) {
	t.Parallel()
	ns := dnstest.Start(t)
	cf := cloudflare.NewEmulator("tok", ns)
	cf.AddZone("example.test")
	api := httptest.NewServer(cf)
	t.Cleanup(api.Close)
	s := newDNS01Solver(cloudflare.NewProvider(api.URL+"/client/v4", "tok"), []string{ns.Addr}, zlog.Discard())
	s.interval = 20 * time.Millisecond
	ctx := context.Background()

	apex := acme.Challenge{Type: "dns-01", Identifier: acme.Identifier{Type: "dns", Value: "example.test"}, KeyAuthorization: "apex-key-auth"}
	wild := acme.Challenge{Type: "dns-01", Identifier: acme.Identifier{Type: "dns", Value: "example.test"}, KeyAuthorization: "wildcard-key-auth"}
	for _, c := range []acme.Challenge{apex, wild} {
		if err := s.Present(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Wait(ctx, apex); err != nil {
		t.Fatal(err)
	}
	if got := cf.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{apex.DNS01KeyAuthorization()}) {
		t.Fatalf("records during the first challenge: %q", got)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.Wait(short, wild); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second challenge of the name while the first is open: %v, want it to wait", err)
	}
	if err := s.CleanUp(ctx, wild); err != nil { // acmez cleans up after a failed Wait
		t.Fatal(err)
	}
	if err := s.Present(ctx, wild); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctx, wild) }()
	if err := s.CleanUp(ctx, apex); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := cf.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{wild.DNS01KeyAuthorization()}) {
		t.Fatalf("records during the second challenge: %q", got)
	}
	if err := s.CleanUp(ctx, wild); err != nil {
		t.Fatal(err)
	}
	if got := cf.TXT("_acme-challenge.example.test"); len(got) != 0 {
		t.Fatalf("records left: %q", got)
	}

	// A name in no zone of the account fails before anything is made.
	other := acme.Challenge{Type: "dns-01", Identifier: acme.Identifier{Type: "dns", Value: "example.org"}, KeyAuthorization: "k"}
	if err := s.Wait(ctx, other); !errors.Is(err, errNoZone) {
		t.Fatalf("challenge outside the zones: %v", err)
	}
	if err := s.CleanUp(ctx, other); err != nil {
		t.Fatal(err)
	}
}

func TestZoneOf(t *testing.T) {
	zones := []libdns.Zone{{Name: "example.test."}, {Name: "sub.example.test"}, {Name: "ample.test"}}
	for name, want := range map[string]string{
		"_acme-challenge.example.test":     "example.test",
		"_acme-challenge.sub.example.test": "sub.example.test",
		"example.test.":                    "example.test",
		"_acme-challenge.EXAMPLE.test":     "example.test",
	} {
		if got, err := zoneOf(name, zones); err != nil || got != want {
			t.Errorf("zoneOf(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := zoneOf("_acme-challenge.xample.test", zones); !errors.Is(err, errNoZone) {
		t.Errorf("a name that merely ends like a zone: %v", err)
	}
}
