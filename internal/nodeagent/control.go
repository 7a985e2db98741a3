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
	// URLs are the operators' management APIs, e.g. http://10.0.0.1:8081,
	// tried in turn: any operator answers for any node.
	URLs   []string
	NodeID uuid.UUID
	// Secret is the node's credential (see Credential).
	Secret string
	Client *http.Client

	mu   sync.Mutex
	next int // the URL that answered last

	authMu sync.Mutex // held while a credential is asked for: one at a time
	auth   *runtime.Auth
	exp    time.Time
}

const registryCredentialPath = "/v1/node/registry-credential"

func (c *Control) do(ctx context.Context, method, path string, out any) error {
	if len(c.URLs) == 0 {
		return errors.New("control plane: no operator URL")
	}
	var err error
	// Start where the last call succeeded, so a dead operator costs one
	// failed attempt, not one per call.
	c.mu.Lock()
	first := c.next
	c.mu.Unlock()
	for i := range c.URLs {
		k := (first + i) % len(c.URLs)
		var retry bool
		retry, err = c.doAt(ctx, c.URLs[k], method, path, out)
		if !retry {
			if err == nil {
				c.mu.Lock()
				c.next = k
				c.mu.Unlock()
			}
			return err
		}
	}
	return err
}

// doAt calls one operator; retry says whether another might answer
// (this one is unreachable or failing), as opposed to an answer.
func (c *Control) doAt(ctx context.Context, base, method, path string, out any) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return false, err
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
		return ctx.Err() == nil, fmt.Errorf("control plane: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return true, fmt.Errorf("control plane: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		switch {
		case resp.StatusCode == http.StatusNotFound && strings.Contains(path, "/instances/") && e.Error != "" && !strings.HasPrefix(e.Error, "no route"):
			return false, fmt.Errorf("%w: %s", ErrNotAssigned, e.Error)
		case resp.StatusCode == http.StatusNotFound && path == registryCredentialPath:
			return false, ErrNoRegistryTokens
		case resp.StatusCode == http.StatusUnprocessableEntity:
			return false, fmt.Errorf("%w: %s", ErrRefused, e.Error)
		}
		return resp.StatusCode >= 500, fmt.Errorf("control plane %s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return false, fmt.Errorf("control plane %s %s: %w", method, path, err)
	}
	return false, nil
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
	c.authMu.Lock()
	defer c.authMu.Unlock()
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
