package slug

import (
	"errors"
	"strings"
	"testing"
)

func TestFrom(t *testing.T) {
	for name, want := range map[string]string{
		"My App":                               "my-app",
		"  --Hello, World!-- ":                 "hello-world",
		"ÄÖÜ":                                  "",
		"!!!":                                  "",
		"0190f3a2-7b1c-7def-8123-456789abcdef": "", // a UUID, hyphenated
		"0190F3A27B1C7DEF8123456789ABCDEF":     "", // and without hyphens
		strings.Repeat("a", 70):                strings.Repeat("a", 63),
		strings.Repeat("a", 62) + " b":         strings.Repeat("a", 62),
	} {
		if got := From(name); got != want {
			t.Errorf("From(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestValidRefusesUUIDShapes(t *testing.T) {
	for _, s := range []string{"0190f3a2-7b1c-7def-8123-456789abcdef", "0190f3a27b1c7def8123456789abcdef", "", "-a", "A", "a_b", strings.Repeat("a", 64)} {
		if err := Valid(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Valid(%q) = %v, want ErrInvalid", s, err)
		}
	}
	for _, s := range []string{"a", "my-app", "0190f3a2-7b1c-7def-8123-456789abcdeg", strings.Repeat("a", 63)} {
		if err := Valid(s); err != nil {
			t.Errorf("Valid(%q) = %v", s, err)
		}
	}
}

func TestWithSuffixStaysASlug(t *testing.T) {
	if got := WithSuffix(strings.Repeat("a", 63), 12); len(got) != 63 || Valid(got) != nil || !strings.HasSuffix(got, "-12") {
		t.Fatalf("WithSuffix = %q", got)
	}
}
