package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

var (
	// ErrNotAssigned: the control plane says the instance is not this
	// node's (it moved, or was never here).
	ErrNotAssigned = errors.New("instance not assigned to this node")
	// ErrRefused: the control plane will not give what was asked, and
	// asking again will not change that (a variable it cannot decrypt).
	ErrRefused = errors.New("refused by the control plane")
	// ErrNoRegistryTokens: the control plane is not the registry's token
	// service (a registry without auth, or one with its own accounts).
	ErrNoRegistryTokens = errors.New("the control plane issues no registry credentials")
)

// Control is the control plane's node routes (internal/management,
// /v1/node/…) as this node's agent calls them, with the node's own
// credential. Through it the node gets its instances' decrypted
// environments and a registry credential scoped to what it runs, so it
// holds neither the secrets keys nor a registry credential that pulls
// everything.
type Control struct {
	// URL is an operator's management API, e.g. http://10.0.0.1:8081.
	URL    string
	NodeID uuid.UUID
	// Secret is the node's credential (see Credential).
	Secret string
	Client *http.Client

	mu   sync.Mutex
	auth *runtime.Auth
	exp  time.Time
}

const registryCredentialPath = "/v1/node/registry-credential"

func (c *Control) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.NodeID.String(), c.Secret)
	client := c.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		// url.Error names the URL and the cause; the secret travels in a
		// header, never in it.
		return fmt.Errorf("control plane: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode == http.StatusNotFound && strings.Contains(path, "/instances/") && e.Error != "" && !strings.HasPrefix(e.Error, "no route") {
			return fmt.Errorf("%w: %s", ErrNotAssigned, e.Error)
		}
		if resp.StatusCode == http.StatusNotFound && path == registryCredentialPath {
			return ErrNoRegistryTokens
		}
		if resp.StatusCode == http.StatusUnprocessableEntity {
			return fmt.Errorf("%w: %s", ErrRefused, e.Error)
		}
		return fmt.Errorf("control plane %s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("control plane %s %s: %w", method, path, err)
	}
	return nil
}

// Environment returns an instance's variables, decrypted by the control
// plane. Errors never carry a value.
func (c *Control) Environment(ctx context.Context, instanceID uuid.UUID) (map[string]string, error) {
	var out struct {
		Environment map[string]string `json:"environment"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/node/instances/"+url.PathEscape(instanceID.String())+"/environment", &out); err != nil {
		return nil, err
	}
	return out.Environment, nil
}

// RegistryAuth returns the node's registry credential, asking for a new
// one when the last is within ten minutes of expiring.
func (c *Control) RegistryAuth(ctx context.Context) (*runtime.Auth, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.auth != nil && time.Until(c.exp) > 10*time.Minute {
		return c.auth, nil
	}
	var out struct {
		Username  string    `json:"username"`
		Password  string    `json:"password"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := c.do(ctx, http.MethodPost, registryCredentialPath, &out); err != nil {
		return nil, err
	}
	c.auth, c.exp = &runtime.Auth{Username: out.Username, Password: out.Password}, out.ExpiresAt
	return c.auth, nil
}
