package github

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kinds of failure a caller reacts to differently; match with errors.Is on
// an *Error.
var (
	// ErrUnauthorized: GitHub rejected the credentials (the App's JWT, or
	// an installation token).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the credentials are valid but may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: GitHub says 404, which for a private repository also
	// means "no access".
	ErrNotFound = errors.New("not found")
	// ErrRateLimited: retry after Error.RetryAfter.
	ErrRateLimited = errors.New("rate limited")
)

// Error is a non-success answer from GitHub.
type Error struct {
	Op         string // what was attempted, e.g. "download tarball acme/app@1a2b3c4"
	StatusCode int
	Message    string        // GitHub's own message, if it sent one
	Reason     string        // what it means for us, shown to the user
	RetryAfter time.Duration // set with ErrRateLimited
	Kind       error         // one of the sentinels above, or nil
}

func (e *Error) Error() string {
	reason := e.Reason
	if reason == "" && e.Kind != nil {
		reason = e.Kind.Error()
	}
	if reason == "" {
		reason = "unexpected response"
	}
	s := fmt.Sprintf("github: %s: %s (HTTP %d", e.Op, reason, e.StatusCode)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s + ")"
}

func (e *Error) Unwrap() error { return e.Kind }

// responseError reads GitHub's error body and classifies the answer,
// including both kinds of rate limit GitHub documents: the primary one
// (x-ratelimit-remaining: 0, wait until x-ratelimit-reset) and secondary
// ones (retry-after, or "wait at least a minute" when neither is given).
func responseError(op string, resp *http.Response) *Error {
	var body struct {
		Message string `json:"message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(raw, &body)
	e := &Error{Op: op, StatusCode: resp.StatusCode, Message: body.Message}

	h := resp.Header
	limited := resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode == http.StatusForbidden &&
			(h.Get("X-RateLimit-Remaining") == "0" || h.Get("Retry-After") != "" ||
				strings.Contains(strings.ToLower(body.Message), "rate limit"))
	switch {
	case limited:
		e.Kind = ErrRateLimited
		e.RetryAfter = retryAfter(h, time.Now())
		e.Reason = fmt.Sprintf("rate limited by GitHub, retry in %s", e.RetryAfter.Round(time.Second))
	case resp.StatusCode == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
	case resp.StatusCode == http.StatusForbidden:
		e.Kind = ErrForbidden
	case resp.StatusCode == http.StatusNotFound:
		e.Kind = ErrNotFound
	}
	return e
}

func retryAfter(h http.Header, now time.Time) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Unix(reset, 0).Sub(now), 0)
		}
	}
	return time.Minute
}
