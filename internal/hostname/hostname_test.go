package hostname

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"app.example.com":       "app.example.com",
		"App.Example.COM":       "app.example.com",
		"app.example.com.":      "app.example.com",
		"app.example.com:8443":  "app.example.com",
		"app.example.com.:443":  "app.example.com",
		"bücher.example":        "xn--bcher-kva.example",
		"XN--BCHER-KVA.example": "xn--bcher-kva.example",
		"my-app.zeitwork.app":   "my-app.zeitwork.app",
		"localhost":             "localhost",
	} {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "10.0.0.1", "10.0.0.1:80", "[::1]", "[::1]:80", "fd00::1", "app.example.com:", "app.example.com:http",
		"app.example.com:123456", "bad host.com", "a..b", ".", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 130) + "com",
		"app_example.com", "ex\x00ample.com",
	} {
		if got, err := Normalize(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Normalize(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"app.example.com", "A.B:1", "[::1]:80", "bücher.de.", "1.2.3.4", "xn--", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			return
		}
		// A normalised name is a fixed point, ASCII, lower case, no port.
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("Normalize(%q) = %q, which normalises to %q, %v", in, out, again, err)
		}
		if strings.ToLower(out) != out || strings.ContainsAny(out, ":[] ") {
			t.Fatalf("Normalize(%q) = %q", in, out)
		}
	})
}

// FuzzPlain: a name IsPlain accepts is one Normalize returns unchanged, so
// callers may skip normalising it.
func FuzzPlain(f *testing.F) {
	for _, s := range []string{"shop.zeitwork.app", "a-b.c", "xn--bcher-kva.example", "1.2.3.4", "a--b.c", "-a.b", "a.b-", "localhost", "0x1.a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if !IsPlain(in) {
			return
		}
		if out, err := Normalize(in); err != nil || out != in {
			t.Fatalf("IsPlain(%q) but Normalize = %q, %v", in, out, err)
		}
	})
}

func TestIsPlain(t *testing.T) {
	for _, in := range []string{"shop.zeitwork.app", "a-b.c", "localhost", "01a20b68-4c0a-719d-9c27-95bf68941d45.zeitwork.app"} {
		if !IsPlain(in) {
			t.Errorf("IsPlain(%q) = false", in)
		}
	}
	for _, in := range []string{"", "Shop.app", "xn--bcher-kva.example", "1.2.3.4", "ab--c.d", "-a.b", "a.b-", "a..b", "a.", ".a", "a_b.c", "bücher.de", strings.Repeat("a", 64) + ".c"} {
		if IsPlain(in) {
			t.Errorf("IsPlain(%q) = true", in)
		}
	}
}
