package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/upload"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/webhook"
)

// OpenAPIPath serves the OpenAPI 3.1 document of everything below /v1.
const OpenAPIPath = "/v1/openapi.json"

// API is the public API's dependencies.
type API struct {
	Accounts account.Store
	Projects project.Store
	// Variables are the projects' environment variables; without keys
	// their routes answer 503.
	Variables project.Variables
	Deploys   Deploys
	Log       *slog.Logger
	// Dev leaves Secure off session cookies, for http://localhost.
	Dev bool
	// Webhook receives GitHub's deliveries at WebhookPath; nil (no webhook
	// secret) serves and documents no such route.
	Webhook *webhook.Receiver
	// GitHub enables sign-in with GitHub; nil: no sign-in routes.
	GitHub *GitHubSignIn
	// Domains are the projects' custom domains; without a service their
	// routes answer 503.
	Domains project.Domains
	// Devices runs `zeitwork login`'s device sign-in; a nil DB is
	// Accounts.DB. DeviceVerificationURL is the page that approves a code
	// (the dashboard's); empty: /device on the host the CLI called.
	Devices               account.Devices
	DeviceVerificationURL string
	// Limits are the rate limits; the zero value applies none.
	Limits Limits
	// App is the GitHub App: installations, their repositories, and
	// projects connected to them; nil: none of their routes.
	App *githubapp.App
	// Uploads keeps the archives `zeitwork deploy ./dir` sends, and
	// proves an archive_key exists before a deployment builds it; nil (no
	// S3): the upload routes answer 503 and archive keys are only checked
	// for their project's prefix.
	Uploads *upload.Store
	// UploadIdle cuts off a streamed upload that sends nothing for this
	// long; 0 means a minute.
	UploadIdle time.Duration
	// Logs reads deployments' build and runtime logs.
	Logs Logs

	// extra registers more operations; tests use it for handlers that fail.
	extra func(huma.API)
}

// Handler serves the API.
func (a *API) Handler() http.Handler {
	h, _ := a.build()
	return h
}

// build returns the handler and the patterns registered on its mux, which
// the tests compare with the OpenAPI document.
func (a *API) build() (http.Handler, *routes) {
	mux := &routes{ServeMux: http.NewServeMux()}
	cfg := huma.DefaultConfig("Zeitwork API", version.Version)
	// The document is served by hand (below) at one path only; no docs
	// page, no schema files, no $schema links in bodies: one contract, one URL.
	cfg.OpenAPIPath, cfg.DocsPath, cfg.SchemasPath, cfg.CreateHooks = "", "", "", nil
	cfg.Info.Description = "The public API of Zeitwork. Authenticate with the session cookie a browser sign-in sets, or with `Authorization: Bearer zw_…` (an API token)."
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		schemeSession: {Type: "apiKey", In: "cookie", Name: SessionCookie, Description: "The session a browser sign-in starts."},
		schemeToken:   {Type: "http", Scheme: "bearer", Description: "An API token (`zw_…`) from POST /v1/tokens."},
	}
	api := humago.New(mux, cfg)
	api.UseMiddleware(a.authenticate(api))
	a.register(api)
	if a.extra != nil {
		a.extra(api)
	}

	spec, err := json.Marshal(api.OpenAPI())
	if err != nil {
		panic(fmt.Sprintf("api: OpenAPI document: %v", err)) // the types above are static: a bug, found by every test
	}
	mux.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oai.openapi+json")
		_, _ = w.Write(spec) // the client went away: nothing to do
	})
	return a.middleware(mux), mux
}

func (a *API) register(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "health", Method: http.MethodGet, Path: "/v1/health", Tags: []string{"meta"},
		Summary: "Health", Description: "Answers while this API process serves requests.",
	}, a.health)
	a.registerAccount(api)
	a.registerProjects(api)
	a.registerDeployments(api)
	a.registerDeploymentStatus(api)
	a.registerWebhook(api)
	a.registerSignIn(api)
	a.registerEnv(api)
	a.registerProjectSettings(api)
	a.registerDomains(api)
	a.registerDevice(api)
	a.registerGitHubApp(api)
	a.registerUploads(api)
	a.registerLogs(api)
}

type healthOutput struct {
	Body struct {
		Status  string `json:"status" example:"ok"`
		Version string `json:"version"`
	}
}

func (a *API) health(context.Context, *struct{}) (*healthOutput, error) {
	out := &healthOutput{}
	out.Body.Status, out.Body.Version = "ok", version.Version
	return out, nil
}

// routes is the mux, remembering its patterns.
type routes struct {
	*http.ServeMux
	patterns []string
}

func (m *routes) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, h)
}

type requestKey struct{}

// request is what the error path needs to know about a request.
type request struct {
	id, method, path string
	log              *slog.Logger
}

// middleware gives every request an id (X-Request-Id, the client's when
// it is sane), turns a panic into a logged 500, and answers unrouted
// requests with problem+json 404s and 405s instead of the mux's text.
func (a *API) middleware(mux *routes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := &request{id: httpapi.NewRequestID(r.Header.Get("X-Request-Id")), method: r.Method, path: r.URL.Path, log: a.Log}
		w.Header().Set("X-Request-Id", req.id)
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, req))
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				logFailure(r.Context(), http.StatusInternalServerError, fmt.Errorf("panic: %v", p))
				writeProblem(w, http.StatusInternalServerError, "internal error")
			}
		}()
		routed, allow := httpapi.Unrouted(mux.ServeMux, r)
		if routed {
			mux.ServeHTTP(w, r)
			return
		}
		if allow != "" {
			w.Header().Set("Allow", allow)
			writeProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
}
