package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/project"
)

// huma builds every error through these two variables, the 500 for an
// error a handler returned included (with the error as a detail). They are
// replaced so that no 5xx body carries a cause, whichever path made it.
func init() {
	newError := huma.NewError
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		if status >= http.StatusInternalServerError {
			return newError(status, msg)
		}
		return newError(status, msg, errs...)
	}
	huma.NewErrorWithContext = func(ctx huma.Context, status int, msg string, errs ...error) huma.StatusError {
		if status >= http.StatusInternalServerError {
			logFailure(ctx.Context(), status, errors.Join(errs...))
		}
		return huma.NewError(status, msg, errs...)
	}
}

// logFailure logs the cause of a 5xx with the request's id.
func logFailure(ctx context.Context, status int, cause error) {
	r, _ := ctx.Value(requestKey{}).(*request)
	if r == nil {
		slog.Default().ErrorContext(ctx, "request failed", "status", status, "err", cause)
		return
	}
	r.log.ErrorContext(ctx, "request failed", "method", r.method, "path", r.path, "status", status, "request_id", r.id, "err", cause)
}

// problem renders a domain error: sentinels become the 4xx they mean, with
// the domain's message; anything else is an unexpected 500.
func problem(err error) error {
	switch {
	case errors.Is(err, project.ErrNotFound), errors.Is(err, account.ErrNotFound):
		return huma.Error404NotFound(notFoundMessage(err))
	case errors.Is(err, project.ErrSlugTaken):
		return huma.Error409Conflict(err.Error())
	case errors.Is(err, project.ErrInvalid), errors.Is(err, account.ErrInvalid):
		return huma.Error422UnprocessableEntity(err.Error())
	}
	return err
}

// notFoundMessage names what was not found without saying whether it
// exists for someone else.
func notFoundMessage(err error) string {
	if errors.Is(err, project.ErrNotFound) {
		return "no such project"
	}
	return "not found"
}

// writeProblem answers outside huma (unrouted paths, panics) in the same
// problem+json shape huma uses.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(huma.ErrorModel{Title: http.StatusText(status), Status: status, Detail: detail}) // the client went away: nothing to do
}
