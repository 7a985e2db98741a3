package certs

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	z := zapToSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))).Named("obtain").With(zap.String("identifier", "a.test"))
	z.Info("obtaining certificate", zap.Int("attempt", 2))
	z.Error("could not get certificate", zap.Error(errors.New("boom")))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	for _, want := range []string{"level=DEBUG", `msg="obtaining certificate"`, "identifier=a.test", "logger=obtain", "attempt=2"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("info line %q lacks %q", lines[0], want)
		}
	}
	for _, want := range []string{"level=ERROR", "error=boom", "identifier=a.test"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("error line %q lacks %q", lines[1], want)
		}
	}

	// Below the handler's level, nothing is even formatted.
	buf.Reset()
	quiet := zapToSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	quiet.Info("step")
	quiet.Warn("trouble")
	if got := buf.String(); strings.Contains(got, "step") || !strings.Contains(got, "level=WARN") {
		t.Fatalf("with level info: %q", got)
	}
}
