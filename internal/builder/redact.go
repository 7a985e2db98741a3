package builder

import (
	"regexp"
)

// GitHub's tarball downloads redirect to a URL that carries its own token
// (codeload's ?token=…), and Go's HTTP client puts the URL it failed on into
// its errors; a connection reset mid-download would write that token into
// the build log and the deployment's failure reason, where every member of
// the project reads it. redact cuts credentials out of such messages.
var secretPatterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	// A URL's query and user info: tokens, signatures (S3's X-Amz-*), passwords.
	{regexp.MustCompile(`(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'?#]*)\?[^\s"'#]*`), "$1?REDACTED"},
	{regexp.MustCompile(`(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s"'/@]+@`), "${1}REDACTED@"},
	// GitHub's token formats, wherever they stand.
	{regexp.MustCompile(`\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]{10,}`), "${1}REDACTED"},
	// token=…, access_token: …, Authorization: Bearer …
	{regexp.MustCompile(`(?i)\b((?:access_)?token["']?\s*[=:]\s*["']?)[^\s"'&]+`), "${1}REDACTED"},
	{regexp.MustCompile(`(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{16,}`), "$1 REDACTED"},
}

// redactString is s without the credentials secretPatterns recognise.
func redactString(s string) string {
	for _, p := range secretPatterns {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	return s
}

// redactedError shows err's message without credentials, and still
// unwraps to err so that callers can tell its kind (UserError, github.ErrNotFound).
type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// redact returns err with a message that names no credential (nil for nil).
func redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := redactString(msg); clean != msg {
		return redactedError{err: err, msg: clean}
	}
	return err
}
