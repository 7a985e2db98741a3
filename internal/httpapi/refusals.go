package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// With sets the cause that is logged (never shown) and returns e.
func (e *Error) With(cause error) *Error {
	e.Err = cause
	return e
}

// Refusals says which of a domain's sentinel errors are the client's to
// fix, so that every API maps a domain's errors the same way: an error
// wrapping one of NotFound is a 404, Invalid a 422, Conflict a 409, each
// with the error's text (which names what was refused) as the message.
// Any other error is returned unchanged and becomes an opaque 500 with its
// cause logged: a database outage is never a 404.
type Refusals struct {
	NotFound, Invalid, Conflict []error
}

// Map turns err into the client error it is, or returns it unchanged.
func (r Refusals) Map(err error) error {
	if err == nil {
		return nil
	}
	is := func(targets []error) bool {
		return slices.ContainsFunc(targets, func(t error) bool { return errors.Is(err, t) })
	}
	switch {
	case is(r.NotFound):
		return NotFound("%s", err).With(err)
	case is(r.Invalid):
		return Invalid("%s", err).With(err)
	case is(r.Conflict):
		return Conflict("%s", err).With(err)
	}
	return err
}

// MethodNotAllowed refuses r's method on its path (405); the caller sets
// the Allow header to allow.
func MethodNotAllowed(r *http.Request, allow string) *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
		Message: fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)}
}
