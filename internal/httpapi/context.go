package httpapi

import (
	"context"
	"net/http"
)

func contextWith(r *http.Request, requestID string) context.Context {
	return context.WithValue(r.Context(), ctxKey{}, requestID)
}
