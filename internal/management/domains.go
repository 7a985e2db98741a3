package management

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/httpapi"
)

// Domain is a custom domain as the API shows it.
type Domain struct {
	ID        uuid.UUID `json:"id"`
	ProjectID uuid.UUID `json:"project_id"`
	Name      string    `json:"name"`
	// Status is pending (checks go on), verified (routed, rechecked) or
	// failed (given up, moved to another project, or no longer pointing at
	// the edge; POST .../verify asks again).
	Status        domains.Status `json:"status"`
	Verification  Verification   `json:"verification"`
	FailureReason *string        `json:"failure_reason"`
	// FailedRechecks: rechecks of a verified domain that failed in a row;
	// at the limit it is failed and no longer served.
	FailedRechecks int        `json:"failed_rechecks"`
	VerifiedAt     *time.Time `json:"verified_at"`
	LastCheckedAt  *time.Time `json:"last_checked_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

// Verification is the DNS record that proves a domain; either one does,
// but a name another project has verified moves only with the TXT record.
type Verification struct {
	CNAMETarget string `json:"cname_target"` // <name> CNAME <cname_target>
	TXTName     string `json:"txt_name"`     // <txt_name> TXT <txt_value>
	TXTValue    string `json:"txt_value"`
}

func (a *API) domainJSON(d domains.Domain) Domain {
	v := a.Domains.Instructions(d)
	return Domain{
		ID: d.ID, ProjectID: d.ProjectID, Name: d.Name, Status: d.Status,
		Verification:  Verification{CNAMETarget: v.CNAMETarget, TXTName: v.TXTName, TXTValue: v.TXTValue},
		FailureReason: d.FailureReason, FailedRechecks: d.FailedRechecks, VerifiedAt: d.VerifiedAt, LastCheckedAt: d.LastCheckedAt, CreatedAt: d.CreatedAt,
	}
}

// domainError turns the domain package's refusals into client errors.
func domainError(err error) error {
	var herr *httpapi.Error
	switch {
	case errors.Is(err, domains.ErrInvalidName):
		herr = httpapi.BadRequest("%s", err)
		herr.Code = "invalid_domain_name"
	case errors.Is(err, domains.ErrPlatformDomain):
		herr = httpapi.BadRequest("%s", err)
		herr.Code = "platform_domain"
	case errors.Is(err, domains.ErrExists):
		herr = httpapi.Conflict("%s", err)
	case errors.Is(err, domains.ErrProjectNotFound), errors.Is(err, domains.ErrNotFound):
		herr = httpapi.NotFound("%s", err)
	default:
		return err
	}
	return herr
}

func domainPath(r *http.Request) (project, domain uuid.UUID, err error) {
	if project, err = pathID(r); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	if domain, err = uuid.Parse(r.PathValue("domainID")); err != nil {
		return uuid.Nil, uuid.Nil, httpapi.BadRequest("%q is not an id", r.PathValue("domainID"))
	}
	return project, domain, nil
}

func (a *API) listDomains(w http.ResponseWriter, r *http.Request) error {
	project, err := pathID(r)
	if err != nil {
		return err
	}
	rows, err := a.Domains.List(r.Context(), project)
	if err != nil {
		return domainError(err)
	}
	out := lo.Map(rows, func(d domains.Domain, _ int) Domain { return a.domainJSON(d) })
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domains": out})
	return nil
}

// AddDomainRequest is the body of POST /v1/projects/{id}/domains.
type AddDomainRequest struct {
	Name string `json:"name"`
}

func (a *API) addDomain(w http.ResponseWriter, r *http.Request) error {
	project, err := pathID(r)
	if err != nil {
		return err
	}
	var req AddDomainRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return httpapi.BadRequest("name is required")
	}
	d, err := a.Domains.Add(r.Context(), project, req.Name)
	if err != nil {
		return domainError(err)
	}
	w.Header().Set("Location", "/v1/projects/"+project.String()+"/domains/"+d.ID.String())
	httpapi.WriteJSON(w, http.StatusCreated, a.domainJSON(d))
	return nil
}

func (a *API) getDomain(w http.ResponseWriter, r *http.Request) error {
	project, domainID, err := domainPath(r)
	if err != nil {
		return err
	}
	d, err := a.Domains.Get(r.Context(), project, domainID)
	if err != nil {
		return domainError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, a.domainJSON(d))
	return nil
}

// verifyDomain checks the domain now and answers with the outcome: 200
// whether or not DNS proved it, since the check itself succeeded; status
// and failure_reason say what it found.
func (a *API) verifyDomain(w http.ResponseWriter, r *http.Request) error {
	project, domainID, err := domainPath(r)
	if err != nil {
		return err
	}
	if _, err := a.Domains.Get(r.Context(), project, domainID); err != nil {
		return domainError(err)
	}
	d, err := a.Domains.Check(r.Context(), domainID)
	if err != nil {
		return domainError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, a.domainJSON(d))
	return nil
}

func (a *API) removeDomain(w http.ResponseWriter, r *http.Request) error {
	project, domainID, err := domainPath(r)
	if err != nil {
		return err
	}
	if err := a.Domains.Remove(r.Context(), project, domainID); err != nil {
		return domainError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
