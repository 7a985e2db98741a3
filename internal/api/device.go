package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/zeitwork/zeitwork/internal/account"
)

// DeviceError is a refused device poll: problem+json with RFC 8628's
// error code in "error", which is what a client branches on.
type DeviceError struct {
	huma.ErrorModel
	Code string `json:"error" enum:"authorization_pending,slow_down,access_denied,expired_token,invalid_grant" doc:"RFC 8628's error code: authorization_pending (poll again after interval), slow_down (poll again, 5 s slower), access_denied, expired_token (start again), invalid_grant (no such device code)"`
}

// deviceErrors are the poll's refusals, in the order a client meets them.
var deviceErrors = []struct {
	err    error
	detail string
}{
	{account.ErrAuthorizationPending, "the sign-in has not been approved yet: poll again after the interval"},
	{account.ErrSlowDown, "polled sooner than the interval allows: wait 5 seconds longer between polls"},
	{account.ErrAccessDenied, "the sign-in was denied"},
	{account.ErrExpiredToken, "the device code expired or was already used: start again with POST /v1/auth/device"},
	{account.ErrInvalidGrant, "no such device code"},
}

func (a *API) devices() account.Devices {
	d := a.Devices
	if d.DB == nil {
		d.DB = a.Accounts.DB
	}
	return d
}

func (a *API) registerDevice(api huma.API) {
	errSchema := api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[DeviceError](), true, "")
	huma.Register(api, huma.Operation{
		OperationID: "start-device-sign-in", Method: http.MethodPost, Path: "/v1/auth/device", Tags: []string{"account"},
		Summary: "Start a device sign-in",
		Description: "How the CLI signs in (RFC 8628's device flow, in JSON): show `user_code` and `verification_uri` to the user, " +
			"then poll POST /v1/auth/device/token with `device_code` every `interval` seconds until a signed-in user approves the code.",
		Errors: []int{http.StatusTooManyRequests},
	}, a.startDevice)
	huma.Register(api, huma.Operation{
		OperationID: "poll-device-sign-in", Method: http.MethodPost, Path: "/v1/auth/device/token", Tags: []string{"account"},
		Summary: "Collect a device sign-in's token",
		Description: "Answers 400 with `error` authorization_pending while nobody has decided, slow_down when polled sooner than `interval`, " +
			"access_denied, expired_token or invalid_grant; once approved, a new API token named after the client, returned this once.",
		Errors: []int{http.StatusUnprocessableEntity},
		Responses: map[string]*huma.Response{
			"400": {Description: "Not (yet) a token; `error` says why.", Content: map[string]*huma.MediaType{"application/problem+json": {Schema: errSchema}}},
		},
	}, a.pollDevice)
	huma.Register(api, huma.Operation{
		OperationID: "get-device-sign-in", Method: http.MethodGet, Path: "/v1/auth/device", Tags: []string{"account"}, Security: signedIn,
		Summary:     "What a user code would sign in",
		Description: "The pending device sign-in a user code names (any case, hyphen optional), to show before approving it; 404 when unknown, expired or decided.",
	}, a.getDevice)
	huma.Register(api, huma.Operation{
		OperationID: "approve-device-sign-in", Method: http.MethodPost, Path: "/v1/auth/device/approve", Tags: []string{"account"}, Security: signedIn,
		Summary:       "Approve a device sign-in",
		Description:   "Signs the device that shows this user code in as you: its next poll receives a new API token of yours. 404 when the code is unknown, expired or decided.",
		DefaultStatus: http.StatusNoContent,
	}, a.approveDevice)
	huma.Register(api, huma.Operation{
		OperationID: "deny-device-sign-in", Method: http.MethodPost, Path: "/v1/auth/device/deny", Tags: []string{"account"}, Security: signedIn,
		Summary:       "Deny a device sign-in",
		Description:   "The device's next poll is access_denied. 404 when the code is unknown, expired or decided.",
		DefaultStatus: http.StatusNoContent,
	}, a.denyDevice)
}

type startDeviceInput struct {
	Client client
	Body   struct {
		ClientName string `json:"client_name" minLength:"1" maxLength:"100" doc:"what the device calls itself (e.g. zeitwork CLI on laptop): shown to the approving user and the token's name"`
	}
}

type startDeviceOutput struct {
	CacheControl string `header:"Cache-Control"`
	Body         struct {
		DeviceCode              string `json:"device_code" doc:"the device's secret: poll with it, show it to nobody"`
		UserCode                string `json:"user_code" example:"WDJB-MJHT" doc:"what the user types at verification_uri"`
		VerificationURI         string `json:"verification_uri" format:"uri"`
		VerificationURIComplete string `json:"verification_uri_complete" format:"uri" doc:"verification_uri with the user code filled in"`
		ExpiresIn               int    `json:"expires_in" doc:"seconds until the codes expire"`
		Interval                int    `json:"interval" doc:"seconds to wait between polls"`
	}
}

func (a *API) startDevice(ctx context.Context, in *startDeviceInput) (*startDeviceOutput, error) {
	if err := a.limitAddress(ctx, "device", in.Client, a.Limits.DeviceCodes); err != nil {
		return nil, err
	}
	code, err := a.devices().Start(ctx, in.Body.ClientName)
	if err != nil {
		return nil, problem(err)
	}
	out := &startDeviceOutput{CacheControl: "no-store"}
	b := &out.Body
	b.DeviceCode, b.UserCode = code.DeviceCode, code.UserCode
	b.VerificationURI = a.verificationURI(in.Client)
	b.VerificationURIComplete = b.VerificationURI + "?" + url.Values{"user_code": {code.UserCode}}.Encode()
	b.ExpiresIn = int(code.ExpiresIn.Seconds())
	b.Interval = int(code.Interval.Seconds())
	return out, nil
}

// verificationURI is the configured approval page, or /device on the
// host the CLI called: https unless in dev over plain HTTP, since a load
// balancer in front terminates TLS.
func (a *API) verificationURI(c client) string {
	if a.DeviceVerificationURL != "" {
		return a.DeviceVerificationURL
	}
	scheme := "https"
	if a.Dev && !c.tls {
		scheme = "http"
	}
	return (&url.URL{Scheme: scheme, Host: c.host, Path: "/device"}).String()
}

type pollDeviceInput struct {
	Body struct {
		DeviceCode string `json:"device_code" minLength:"1" maxLength:"100"`
	}
}

type pollDeviceOutput struct {
	CacheControl string `header:"Cache-Control"`
	Body         struct {
		Token
		AccessToken string `json:"access_token" doc:"the API token's secret (zw_…), shown this once: send it as Authorization: Bearer <access_token>"`
		TokenType   string `json:"token_type" enum:"Bearer"`
	}
}

func (a *API) pollDevice(ctx context.Context, in *pollDeviceInput) (*pollDeviceOutput, error) {
	t, err := a.devices().Poll(ctx, in.Body.DeviceCode)
	for _, e := range deviceErrors {
		if errors.Is(err, e.err) {
			return nil, &DeviceError{ErrorModel: huma.ErrorModel{Title: http.StatusText(http.StatusBadRequest), Status: http.StatusBadRequest, Detail: e.detail}, Code: e.err.Error()}
		}
	}
	if err != nil {
		return nil, err
	}
	out := &pollDeviceOutput{CacheControl: "no-store"}
	out.Body.Token, out.Body.AccessToken, out.Body.TokenType = tokenOut(t), t.Secret, "Bearer"
	return out, nil
}

// DeviceSignIn is a pending device sign-in, shown before approving it.
type DeviceSignIn struct {
	UserCode   string    `json:"user_code" example:"WDJB-MJHT"`
	ClientName string    `json:"client_name" doc:"what the device calls itself; the token's name once approved"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

type getDeviceInput struct {
	UserCode string `query:"user_code" required:"true" maxLength:"20" doc:"the code the device shows, e.g. WDJB-MJHT"`
}

type getDeviceOutput struct{ Body DeviceSignIn }

func (a *API) getDevice(ctx context.Context, in *getDeviceInput) (*getDeviceOutput, error) {
	p, err := a.devices().Pending(ctx, in.UserCode)
	if err != nil {
		return nil, problem(err)
	}
	return &getDeviceOutput{Body: DeviceSignIn{UserCode: p.UserCode, ClientName: p.ClientName, CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt}}, nil
}

type decideDeviceInput struct {
	Body struct {
		UserCode string `json:"user_code" maxLength:"20" doc:"the code the device shows, e.g. WDJB-MJHT (any case, hyphen optional)"`
	}
}

func (a *API) approveDevice(ctx context.Context, in *decideDeviceInput) (*struct{}, error) {
	return nil, problem(a.devices().Approve(ctx, principal(ctx).UserID, in.Body.UserCode))
}

func (a *API) denyDevice(ctx context.Context, in *decideDeviceInput) (*struct{}, error) {
	return nil, problem(a.devices().Deny(ctx, principal(ctx).UserID, in.Body.UserCode))
}
