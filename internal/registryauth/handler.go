package registryauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/httpapi"
)

// TokenResponse is what the token endpoint answers (both field names, as
// clients differ in which they read).
type TokenResponse struct {
	Token       string    `json:"token"`
	AccessToken string    `json:"access_token"`
	ExpiresIn   int       `json:"expires_in"`
	IssuedAt    time.Time `json:"issued_at"`
}

// Handler serves the registry's auth.token.realm (/v1/registry/token), in
// both forms clients use: GET with Basic credentials and scope parameters
// (Docker's token protocol; go-containerregistry), and POST of an OAuth2
// password grant (containerd and BuildKit when they hold credentials).
func (s *Service) Handler(api httpapi.Server) http.Handler {
	return api.Handle(func(w http.ResponseWriter, r *http.Request) error {
		var (
			principal, password, service string
			scopes                       []string
			ok                           bool
		)
		switch r.Method {
		case http.MethodGet:
			principal, password, ok = r.BasicAuth()
			service, scopes = r.URL.Query().Get("service"), r.URL.Query()["scope"]
		case http.MethodPost:
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					return &httpapi.Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("body is larger than %d bytes", tooBig.Limit), Err: err}
				}
				return httpapi.BadRequest("form: %v", err)
			}
			if r.PostForm.Get("grant_type") != "password" {
				return httpapi.BadRequest("grant_type must be password")
			}
			principal, password = r.PostForm.Get("username"), r.PostForm.Get("password")
			ok = principal != ""
			service, scopes = r.PostForm.Get("service"), strings.Fields(r.PostForm.Get("scope"))
		default:
			w.Header().Set("Allow", "GET, POST")
			return httpapi.MethodNotAllowed(r, "GET, POST")
		}
		if service != "" && service != s.Name {
			return httpapi.BadRequest("unknown service %q", service)
		}
		if !ok || s.Check(principal, password) != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="zeitwork registry"`)
			return httpapi.Unauthorized()
		}
		access := Grant(principal, scopes)
		if node, ok := nodeOf(principal); ok {
			// What the node runs now, not when its credential was minted:
			// a project moved away is no longer pullable.
			var projects []uuid.UUID
			if s.NodeProjects != nil {
				var err error
				if projects, err = s.NodeProjects(r.Context(), node); err != nil {
					return httpapi.Unavailable("cannot look up the node's projects").With(err)
				}
			}
			access = GrantNode(projects, scopes)
		}
		token, ttl, err := s.Token(principal, access)
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, TokenResponse{Token: token, AccessToken: token, ExpiresIn: int(ttl.Seconds()), IssuedAt: s.now().UTC()})
		return nil
	})
}
