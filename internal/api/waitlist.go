package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
)

// waitingMay are the operations a user waiting for admission may call:
// who am I (to see admitted: false), and sign out.
var waitingMay = map[string]bool{"get-me": true, "sign-out": true}

// admitted answers 403 for a user who waits for admission, unless the
// operation is one they may call; it reports whether the request goes on.
func (a *API) admitted(api huma.API, ctx huma.Context, p account.Principal) bool {
	if waitingMay[ctx.Operation().OperationID] {
		return true
	}
	u, err := a.Accounts.User(ctx.Context(), p.UserID)
	switch {
	case err != nil:
		_ = huma.WriteErr(api, ctx, http.StatusServiceUnavailable, "cannot check credentials right now", err)
		return false
	case !u.Admitted:
		_ = huma.WriteErr(api, ctx, http.StatusForbidden, "waiting for admission: an admin of this installation has to admit you first")
		return false
	}
	return true
}

func (a *API) registerWaitlist(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "join-waitlist", Method: http.MethodPost, Path: "/v1/waitlist", Tags: []string{"waitlist"},
		Summary:       "Join the waitlist",
		Description:   "Leaves an e-mail address to hear when this installation takes new users. Joining twice is one entry.",
		DefaultStatus: http.StatusAccepted,
	}, a.joinWaitlist)
	huma.Register(api, huma.Operation{
		OperationID: "list-waitlist", Method: http.MethodGet, Path: "/v1/admin/waitlist", Tags: []string{"admin"}, Security: signedIn,
		Summary:     "The waitlist (admins)",
		Description: fmt.Sprintf("Users who signed in and wait for admission, and addresses left with POST /v1/waitlist; the oldest %d of each.", account.MaxListed),
	}, a.listWaitlist)
	huma.Register(api, huma.Operation{
		OperationID: "admit-user", Method: http.MethodPost, Path: "/v1/admin/users/{id}/admit", Tags: []string{"admin"}, Security: signedIn,
		Summary: "Admit a waiting user (admins)", DefaultStatus: http.StatusNoContent,
	}, a.admitUser)
}

type joinWaitlistInput struct {
	Body struct {
		Email string `json:"email" format:"email" maxLength:"254"`
	}
}

func (a *API) joinWaitlist(ctx context.Context, in *joinWaitlistInput) (*struct{}, error) {
	if err := a.Accounts.JoinWaitlist(ctx, in.Body.Email); err != nil {
		return nil, problem(err)
	}
	return nil, nil
}

// requireAdmin answers like an unknown route for non-admins, so that the
// admin operations say nothing to them.
func (a *API) requireAdmin(ctx context.Context) error {
	u, err := a.Accounts.User(ctx, principal(ctx).UserID)
	if err != nil {
		return err
	}
	if !u.Admin {
		return huma.Error404NotFound("not found")
	}
	return nil
}

// WaitlistEntry is an address on the waitlist.
type WaitlistEntry struct {
	Email     string    `json:"email"`
	CreatedAt time.Time `json:"created_at"`
}

type listWaitlistOutput struct {
	Body struct {
		Users  []User          `json:"users" doc:"signed in, waiting for admission"`
		Emails []WaitlistEntry `json:"emails" doc:"addresses left with POST /v1/waitlist"`
	}
}

func (a *API) listWaitlist(ctx context.Context, _ *struct{}) (*listWaitlistOutput, error) {
	if err := a.requireAdmin(ctx); err != nil {
		return nil, err
	}
	users, err := a.Accounts.Waiting(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := a.Accounts.Waitlist(ctx)
	if err != nil {
		return nil, err
	}
	out := &listWaitlistOutput{}
	out.Body.Users = make([]User, len(users))
	for i, u := range users {
		out.Body.Users[i] = userOut(u)
	}
	out.Body.Emails = make([]WaitlistEntry, len(entries))
	for i, e := range entries {
		out.Body.Emails[i] = WaitlistEntry{Email: e.Email, CreatedAt: e.CreatedAt}
	}
	return out, nil
}

func (a *API) admitUser(ctx context.Context, in *idInput) (*struct{}, error) {
	if err := a.requireAdmin(ctx); err != nil {
		return nil, err
	}
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("not found")
	}
	if err := a.Accounts.Admit(ctx, id); err != nil {
		return nil, problem(err)
	}
	return nil, nil
}
