package api

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/webhook"
)

// WebhookPath is where GitHub delivers the App's webhooks.
const WebhookPath = "/v1/webhook/github"

// webhookInput documents what GitHub sends. huma never parses it: the
// receiver must see the body byte for byte to check its signature.
type webhookInput struct {
	Event     string `header:"X-GitHub-Event" required:"true" doc:"The event's name: push, ping, installation, installation_repositories; others are recorded and ignored."`
	Delivery  string `header:"X-GitHub-Delivery" required:"true" doc:"The delivery's GUID; a redelivery repeats it and changes nothing."`
	Signature string `header:"X-Hub-Signature-256" required:"true" doc:"sha256=<hex HMAC-SHA256 of the body under the App's webhook secret>."`
}

// WebhookResult and WebhookError name the receiver's bodies in the
// document, apart from the API's own.
type (
	WebhookResult webhook.Result
	WebhookError  httpapi.ErrorBody
)

type webhookOutput struct {
	Body WebhookResult
}

// registerWebhook mounts GitHub's webhook, when the API has a receiver.
// The route is in the document like any other, but its requests go to the
// receiver untouched: no session or token (the signature authenticates),
// no huma body parsing, and the receiver's own 25 MiB limit.
func (a *API) registerWebhook(api huma.API) {
	if a.Webhook == nil {
		return
	}
	// The receiver's errors and logs carry the request id through httpapi's
	// middleware, which keeps the one the API gave the request.
	h := httpapi.Server{Log: a.Log}.Middleware(a.Webhook.Handler())
	errSchema := api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[WebhookError](), true, "")
	failure := func(description string) *huma.Response {
		return &huma.Response{Description: description, Content: map[string]*huma.MediaType{"application/json": {Schema: errSchema}}}
	}
	huma.Register(api, huma.Operation{
		OperationID: "github-webhook", Method: http.MethodPost, Path: WebhookPath, Tags: []string{"github"},
		Summary: "GitHub webhook",
		Description: "Receives the GitHub App's webhook deliveries. Authenticated by X-Hub-Signature-256, not by a session or token. " +
			"Each delivery is recorded once per X-GitHub-Delivery and acted on in the same transaction: a push to a project's " +
			"production branch creates a deployment and its build; installation events keep installations current. " +
			"Errors are `{error, code, request_id}`, not problem+json.",
		MaxBodyBytes: webhook.MaxBody,
		RequestBody: &huma.RequestBody{
			Required:    true,
			Description: "The event's payload, exactly as GitHub sent it (the signature covers these bytes), at most 25 MiB.",
			Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{
				Type: "object", Description: "A GitHub webhook payload; its shape depends on X-GitHub-Event.",
			}}},
		},
		Responses: map[string]*huma.Response{
			"400": failure("A header is missing or invalid, or the body could not be read."),
			"401": failure("The signature is missing or does not match the body; nothing was recorded."),
			"409": failure("The delivery id was received before with a different body."),
			"413": failure("The body is larger than 25 MiB."),
			"415": failure("The body is not application/json."),
			"422": failure("The payload is authentic but does not parse; recorded as failed."),
			"429": failure("The installation sent more deliveries than API_RATE_LIMIT_WEBHOOKS allows; nothing was recorded. Retry-After says when to redeliver."),
			"500": failure("Nothing was recorded; a redelivery is processed afresh."),
		},
		Middlewares: huma.Middlewares{func(ctx huma.Context, _ func(huma.Context)) {
			r, w := humago.Unwrap(ctx)
			if req, ok := r.Context().Value(requestKey{}).(*request); ok {
				r.Header.Set("X-Request-Id", req.id)
			}
			h.ServeHTTP(w, r)
		}},
	}, func(context.Context, *webhookInput) (*webhookOutput, error) {
		return nil, errors.New("api: the webhook middleware answers every delivery") // unreachable
	})
}

// TransformSchema says what the receiver's fields hold, which
// webhook.Result cannot say in tags without knowing huma.
func (WebhookResult) TransformSchema(_ huma.Registry, s *huma.Schema) *huma.Schema {
	for name, doc := range map[string]string{
		"delivery_id": "The X-GitHub-Delivery this answers.",
		"status":      "processed: acted on; ignored: nothing to do (reason says why); failed: recorded but unusable (a redelivery of one).",
		"reason":      "Why the delivery was ignored or failed.",
		"deployments": "The deployments the delivery created.",
		"duplicate":   "The delivery was received before and not acted on again.",
	} {
		if p := s.Properties[name]; p != nil {
			p.Description = doc
		}
	}
	if p := s.Properties["status"]; p != nil {
		p.Enum = []any{string(webhook.StatusProcessed), string(webhook.StatusIgnored), string(webhook.StatusFailed)}
	}
	if p := s.Properties["deployments"]; p != nil && p.Items != nil {
		p.Items.Format = "uuid"
	}
	return s
}
