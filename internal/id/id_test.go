package id

import (
	"errors"
	"testing"

	"github.com/google/uuid"
)

func TestNewIsVersion7AndOrdered(t *testing.T) {
	prev := New()
	for range 1000 {
		next := New()
		if next.Version() != 7 {
			t.Fatalf("New() = %s, version %d, want 7", next, next.Version())
		}
		if next.String() <= prev.String() {
			t.Fatalf("ids not increasing: %s then %s", prev, next)
		}
		prev = next
	}
}

func TestParse(t *testing.T) {
	v7 := New()
	got, err := Parse(v7.String())
	if err != nil || got != v7 {
		t.Fatalf("Parse(%s) = %s, %v", v7, got, err)
	}

	var verr *VersionError
	if _, err := Parse(uuid.NewString()); !errors.As(err, &verr) || verr.Got != 4 {
		t.Fatalf("Parse(v4) error = %v, want VersionError{4}", err)
	}
	if _, err := Parse("not-a-uuid"); err == nil {
		t.Fatal("Parse(garbage) succeeded")
	}
}
