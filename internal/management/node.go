package management

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/registryauth"
)

// The node routes (/v1/node/…) are what a node agent asks the control plane
// for: its instances' environments and its registry credential. Each node
// proves itself with its own credential (Basic: node id, secret), not the
// cluster token, so a node can be answered only about itself: what one
// compromised node can read is what it runs, nothing more.

// registryCredentialTTL is how long a node's registry password lives; the
// agent asks again before it runs out.
const registryCredentialTTL = time.Hour

type nodeKey struct{}

// requireNode lets through requests with a node's own credential and
// records which node it is for the handler.
func (a *API) requireNode(s httpapi.Server, h httpapi.HandlerFunc) http.Handler {
	return s.Handle(func(w http.ResponseWriter, r *http.Request) error {
		user, secret, ok := r.BasicAuth()
		nodeID, err := uuid.Parse(user)
		if !ok || err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="zeitwork node"`)
			return httpapi.Unauthorized()
		}
		if err := (node.Store{DB: a.Pool}).Authenticate(r.Context(), nodeID, secret); err != nil {
			if errors.Is(err, node.ErrBadCredential) {
				w.Header().Set("WWW-Authenticate", `Basic realm="zeitwork node"`)
				return httpapi.Unauthorized().With(err)
			}
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), nodeKey{}, nodeID)))
	})
}

func nodeOf(r *http.Request) uuid.UUID { return r.Context().Value(nodeKey{}).(uuid.UUID) }

// InstanceEnvironment is what GET /v1/node/instances/{id}/environment
// answers: the instance's variables, decrypted.
type InstanceEnvironment struct {
	Environment map[string]string `json:"environment"`
}

func (a *API) instanceEnvironment(w http.ResponseWriter, r *http.Request) error {
	instanceID, err := pathID(r)
	if err != nil {
		return err
	}
	env, err := project.InstanceEnvironment(r.Context(), a.Pool, a.Secrets, nodeOf(r), instanceID)
	switch {
	case errors.Is(err, project.ErrNotAssigned):
		// 404, not 403: a node learns nothing of other nodes' instances.
		return httpapi.NotFound("instance %s is not assigned to this node", instanceID).With(err)
	case errors.Is(err, project.ErrUndecryptable):
		// It names the variable and why, never a value; retrying will not help.
		return httpapi.Invalid("%v", err).With(err)
	case err != nil:
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, InstanceEnvironment{Environment: env})
	return nil
}

// RegistryCredential is what POST /v1/node/registry-credential answers:
// Basic credentials for the registry's token service that grant pull on
// the repositories of the projects placed on the node, as they are when a
// token is asked for.
type RegistryCredential struct {
	Username  string    `json:"username"`
	Password  string    `json:"password"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *API) registryCredential(w http.ResponseWriter, r *http.Request) error {
	principal := registryauth.NodePrincipal(nodeOf(r))
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, RegistryCredential{
		Username: principal, Password: a.RegistryTokens.Mint(principal, registryCredentialTTL),
		ExpiresAt: time.Now().Add(registryCredentialTTL).UTC(),
	})
	return nil
}
