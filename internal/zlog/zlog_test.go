package zlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestJSONHasComponentAndRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	l := Component(New(&buf, Config{Format: FormatJSON, Level: slog.LevelInfo}), "scheduler")
	l.Info("placed", "deployment_id", "d1", "db_password", "hunter2", "key", Secret("s3cr3t"))

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q: %v", buf.String(), err)
	}
	if line["component"] != "scheduler" || line["deployment_id"] != "d1" {
		t.Fatalf("missing attributes: %v", line)
	}
	if strings.Contains(buf.String(), "hunter2") || strings.Contains(buf.String(), "s3cr3t") {
		t.Fatalf("secret leaked: %s", buf.String())
	}
	if line["db_password"] != redacted || line["key"] != redacted {
		t.Fatalf("secrets not redacted: %v", line)
	}
}

func TestTextFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Config{Format: FormatText, Level: slog.LevelWarn})
	l.Info("quiet")
	l.Warn("loud", "n", 1)
	out := buf.String()
	if strings.Contains(out, "quiet") {
		t.Fatalf("info logged at warn level: %q", out)
	}
	if !strings.Contains(out, "level=WARN msg=loud n=1") {
		t.Fatalf("text line = %q", out)
	}
}

func TestFormatUnmarshal(t *testing.T) {
	var f Format
	if err := f.UnmarshalText([]byte("TEXT")); err != nil || f != FormatText {
		t.Fatalf("TEXT -> %q, %v", f, err)
	}
	if err := f.UnmarshalText([]byte("xml")); err == nil {
		t.Fatal("xml accepted")
	}
}

func TestRedactURL(t *testing.T) {
	got := RedactURL("postgres://zeitwork:hunter2@db:5432/zeitwork")
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "zeitwork:xxxxx@db:5432") {
		t.Fatalf("RedactURL = %q", got)
	}
	if got := RedactURL("postgres://u:p@[::1"); got != redacted {
		t.Fatalf("unparseable URL = %q", got)
	}
	if got := Secret("x").String(); got != redacted {
		t.Fatalf("Secret.String = %q", got)
	}
}
