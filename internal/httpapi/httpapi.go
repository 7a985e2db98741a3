// Package httpapi is how every Zeitwork HTTP API (public, management, node)
// speaks: handlers return errors instead of writing them; one Error type
// keeps what the client is told apart from the cause that is logged; bodies
// are decoded strictly with a size limit; every failure is JSON with a 4xx
// status when the client can fix it, and a panic becomes a logged 500, never
// a dropped connection.
package httpapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// Error is an error with a status and a message meant for the client.
type Error struct {
	Status  int    // HTTP status
	Code    string // stable machine-readable code, e.g. "not_found"
	Message string // shown to the client
	Err     error  // the cause, logged, never shown
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest is a request the client must fix (400).
func BadRequest(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, "bad_request", format, args...)
}

// Invalid is a well-formed request whose content is not acceptable (422).
func Invalid(format string, args ...any) *Error {
	return newError(http.StatusUnprocessableEntity, "invalid", format, args...)
}

// NotFound says what was not found (404).
func NotFound(format string, args ...any) *Error {
	return newError(http.StatusNotFound, "not_found", format, args...)
}

// Conflict is a request that clashes with the current state (409).
func Conflict(format string, args ...any) *Error {
	return newError(http.StatusConflict, "conflict", format, args...)
}

// Unauthorized is a missing or wrong credential (401).
func Unauthorized() *Error {
	return newError(http.StatusUnauthorized, "unauthorized", "missing or invalid credentials")
}

// Unavailable is a dependency that is down; the client may retry (503).
func Unavailable(format string, args ...any) *Error {
	return newError(http.StatusServiceUnavailable, "unavailable", format, args...)
}

// ErrorBody is the JSON every error response carries.
type ErrorBody struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
}

// HandlerFunc is a handler that returns its error.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Server adapts HandlerFuncs, rendering their errors and logging causes.
type Server struct {
	Log *slog.Logger
}

// Handle turns h into an http.Handler.
func (s Server) Handle(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var herr *Error
	if !errors.As(err, &herr) {
		herr = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
	}
	rid := RequestID(r)
	if herr.Status >= 500 {
		s.Log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", herr.Status, "request_id", rid, "err", err)
	} else if herr.Err != nil {
		s.Log.InfoContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", herr.Status, "request_id", rid, "err", err)
	}
	WriteJSON(w, herr.Status, ErrorBody{Error: herr.Message, Code: herr.Code, RequestID: rid})
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

// MaxBody bounds request bodies that Decode reads.
const MaxBody = 1 << 20

// Decode reads a JSON body into v strictly: one object, no unknown fields,
// at most MaxBody bytes; every problem is a 400 saying what is wrong.
func Decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "body must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			syntax  *json.SyntaxError
			typ     *json.UnmarshalTypeError
			tooBig  *http.MaxBytesError
			message string
		)
		switch {
		case errors.Is(err, io.EOF):
			message = "body is empty; expected a JSON object"
		case errors.Is(err, io.ErrUnexpectedEOF):
			message = "body is not valid JSON (it ends too early)"
		case errors.As(err, &syntax):
			message = fmt.Sprintf("body is not valid JSON (at byte %d)", syntax.Offset)
		case errors.As(err, &typ):
			message = fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
		case errors.As(err, &tooBig):
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("body is larger than %d bytes", MaxBody)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			message = "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
		default:
			message = "body: " + err.Error()
		}
		return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: message, Err: err}
	}
	if dec.More() {
		return BadRequest("body must hold a single JSON object")
	}
	return nil
}

type ctxKey struct{}

// RequestID returns the id Middleware gave the request.
func RequestID(r *http.Request) string {
	id, _ := r.Context().Value(ctxKey{}).(string)
	return id
}

// NewRequestID is the id of a request whose client sent fromClient as its
// X-Request-Id: kept when it is sane (1 to 64 printable ASCII characters),
// so that a client can follow its request through the logs; otherwise new.
func NewRequestID(fromClient string) string {
	if len(fromClient) == 0 || len(fromClient) > 64 || strings.ContainsFunc(fromClient, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	return fromClient
}

// Middleware gives each request an id (X-Request-Id, kept from the client
// when it is sane) and turns panics into a logged 500.
func (s Server) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := NewRequestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", rid)
		r = r.WithContext(contextWith(r, rid))
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.writeError(w, r, fmt.Errorf("panic: %v", p))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// RequireToken lets through requests carrying "Authorization: Bearer
// <token>"; the internal APIs (management, node agent, node-proxy) share
// a cluster token. The comparison takes constant time.
func (s Server) RequireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="zeitwork"`)
			s.writeError(w, r, Unauthorized())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Router serves mux, answering unknown paths (404) and wrong methods (405,
// with Allow) in the same JSON as every other error.
func (s Server) Router(mux *http.ServeMux) http.Handler {
	return s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		routed, allow := Unrouted(mux, r)
		if routed {
			mux.ServeHTTP(w, r)
			return
		}
		if allow != "" {
			w.Header().Set("Allow", allow)
			s.writeError(w, r, MethodNotAllowed(r, allow))
			return
		}
		s.writeError(w, r, NotFound("no route for %s %s", r.Method, r.URL.Path))
	}))
}

// Unrouted says whether mux has a route for r and, when it has none, which
// methods the path allows ("" for an unknown path: a 404, not a 405). It
// lets the mux decide without writing its plain-text error body, so that
// every API answers both in its own error format.
func Unrouted(mux *http.ServeMux, r *http.Request) (routed bool, allow string) {
	h, pattern := mux.Handler(r)
	if pattern != "" {
		return true, ""
	}
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		return false, probe.header.Get("Allow")
	}
	return false, ""
}

type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }
