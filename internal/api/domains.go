package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/project"
)

// registerDomains mounts the custom domain routes whether or not the
// service is configured: without it they answer 503, so that the contract
// does not change with the configuration.
func (a *API) registerDomains(api huma.API) {
	const desc = " Answers 503 when this API has no custom domains configured."
	huma.Register(api, huma.Operation{
		OperationID: "list-domains", Method: http.MethodGet, Path: "/v1/projects/{id}/domains", Tags: []string{"domains"}, Security: signedIn,
		Summary: "List a project's custom domains", Description: "Oldest first, each with the DNS records that verify it." + desc,
	}, a.listDomains)
	huma.Register(api, huma.Operation{
		OperationID: "add-domain", Method: http.MethodPost, Path: "/v1/projects/{id}/domains", Tags: []string{"domains"}, Security: signedIn,
		Summary: "Add a custom domain", DefaultStatus: http.StatusCreated,
		Description: "The domain is pending until DNS proves it is yours: create one of the records in dns_records. " +
			"It is checked at once in the background, then again and again (and on POST …/verify). " +
			"A name another project has verified is a 409 unless move is set; then only the TXT record moves it here. " +
			"The platform's own names and names that are not host names are a 422." + desc,
	}, a.addDomain)
	huma.Register(api, huma.Operation{
		OperationID: "get-domain", Method: http.MethodGet, Path: "/v1/projects/{id}/domains/{domain}", Tags: []string{"domains"}, Security: signedIn,
		Summary: "Get a custom domain", Description: "Its verification state, the reason of the last failed check, and the DNS records to create." + desc,
	}, a.getDomain)
	huma.Register(api, huma.Operation{
		OperationID: "delete-domain", Method: http.MethodDelete, Path: "/v1/projects/{id}/domains/{domain}", Tags: []string{"domains"}, Security: signedIn,
		Summary: "Remove a custom domain", DefaultStatus: http.StatusNoContent,
		Description: "The edge stops routing the name at once, and another project may add it." + desc,
	}, a.deleteDomain)
	huma.Register(api, huma.Operation{
		OperationID: "verify-domain", Method: http.MethodPost, Path: "/v1/projects/{id}/domains/{domain}/verify", Tags: []string{"domains"}, Security: signedIn,
		Summary: "Check a custom domain's DNS now", Errors: []int{http.StatusTooManyRequests},
		Description: "Looks the records up now instead of at the next scheduled check and answers with the outcome: " +
			"verified, or still pending (failed once given up) with the reason saying what was found and what was expected." + desc,
	}, a.verifyDomain)
}

// Domain is a custom domain as the API shows it.
type Domain struct {
	ID             uuid.UUID   `json:"id" format:"uuid"`
	Name           string      `json:"name" doc:"the host name, lower case, Unicode as punycode"`
	Status         string      `json:"status" enum:"pending,verified,failed" doc:"verified: the edge serves the project at this name, and rechecks it periodically; pending: checks go on; failed: given up, moved to another project, or no longer pointing at Zeitwork (no longer served), checked again only on POST …/verify"`
	Reason         string      `json:"reason" doc:"why the last check did not verify it, with what DNS answered; for a verified domain, why its last rechecks failed; empty when all is well or not checked yet"`
	FailedRechecks int         `json:"failed_rechecks" doc:"rechecks of the verified domain that failed in a row; at the platform's limit the domain is failed and no longer served"`
	DNSRecords     []DNSRecord `json:"dns_records" doc:"create either record to verify the domain; the CNAME also sends its traffic to Zeitwork"`
	VerifiedAt     *time.Time  `json:"verified_at"`
	LastCheckedAt  *time.Time  `json:"last_checked_at"`
	CreatedAt      time.Time   `json:"created_at"`
	UpdatedAt      time.Time   `json:"updated_at"`
}

// DNSRecord is a record to create at the domain's DNS provider.
type DNSRecord struct {
	Type    string `json:"type" enum:"CNAME,TXT"`
	Name    string `json:"name" doc:"the record's full name"`
	Value   string `json:"value"`
	Purpose string `json:"purpose"`
}

func (a *API) domainOut(d domains.Domain) Domain {
	ins := a.Domains.Instructions(d)
	out := Domain{
		ID: d.ID, Name: d.Name, Status: string(d.Status), FailedRechecks: d.FailedRechecks, VerifiedAt: d.VerifiedAt, LastCheckedAt: d.LastCheckedAt,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		DNSRecords: []DNSRecord{
			{Type: "CNAME", Name: d.Name, Value: ins.CNAMETarget, Purpose: "sends the domain's traffic to Zeitwork, and verifies it unless another project has or had a name under this domain, or a wildcard record covers it"},
			{Type: "TXT", Name: ins.TXTName, Value: ins.TXTValue, Purpose: "verifies the domain without moving its traffic yet; the only proof for a name another project has or had, or one a wildcard record covers"},
		},
	}
	if d.FailureReason != nil {
		out.Reason = *d.FailureReason
	}
	return out
}

// domainProblem renders the domains' own errors, then the project's.
func domainProblem(err error) error {
	switch {
	case errors.Is(err, project.ErrNoDomains):
		return huma.Error503ServiceUnavailable(project.ErrNoDomains.Error())
	case errors.Is(err, domains.ErrNotFound):
		return huma.Error404NotFound("no such domain")
	case errors.Is(err, project.ErrDomainTaken):
		return huma.Error409Conflict(err.Error())
	case errors.Is(err, domains.ErrInvalidName), errors.Is(err, domains.ErrPlatformDomain):
		return huma.Error422UnprocessableEntity(err.Error())
	case errors.Is(err, domains.ErrProjectNotFound): // deleted since the membership check
		return huma.Error404NotFound("no such project")
	}
	return problem(err)
}

type listDomainsInput struct {
	ID string `path:"id"`
	// page's fields, repeated: huma does not read the parameters of an
	// unexported embedded struct.
	Cursor string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit  int32  `query:"limit" minimum:"1" maximum:"100" default:"20" doc:"at most this many items"`
}

type listDomainsOutput struct {
	Body struct {
		Items      []Domain `json:"items"`
		NextCursor string   `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listDomains(ctx context.Context, in *listDomainsInput) (*listDomainsOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	pg := page{Cursor: in.Cursor, Limit: in.Limit}
	after, err := pg.after()
	if err != nil {
		return nil, err
	}
	ds, err := a.Domains.List(ctx, principal(ctx).UserID, id, after, pg.fetch())
	if err != nil {
		return nil, domainProblem(err)
	}
	ds, next := cut(pg, ds, func(d domains.Domain) uuid.UUID { return d.ID })
	out := &listDomainsOutput{}
	out.Body.Items = make([]Domain, len(ds))
	for i, d := range ds {
		out.Body.Items[i] = a.domainOut(d)
	}
	out.Body.NextCursor = next
	return out, nil
}

type addDomainInput struct {
	ID   string `path:"id"`
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"300" doc:"a host name such as app.example.com or www.example.com"`
		Move bool   `json:"move,omitempty" doc:"claim a name another project has verified; it moves here once its TXT record holds this domain's token"`
	}
}

type domainOutput struct{ Body Domain }

func (a *API) addDomain(ctx context.Context, in *addDomainInput) (*domainOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	d, err := a.Domains.Add(ctx, principal(ctx).UserID, id, in.Body.Name, in.Body.Move)
	if err != nil {
		return nil, domainProblem(err)
	}
	return &domainOutput{Body: a.domainOut(d)}, nil
}

type domainInput struct {
	ID     string `path:"id"`
	Domain string `path:"domain" doc:"the domain's name" example:"app.example.com"`
}

func (a *API) getDomain(ctx context.Context, in *domainInput) (*domainOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	d, err := a.Domains.Get(ctx, principal(ctx).UserID, id, in.Domain)
	if err != nil {
		return nil, domainProblem(err)
	}
	return &domainOutput{Body: a.domainOut(d)}, nil
}

func (a *API) deleteDomain(ctx context.Context, in *domainInput) (*struct{}, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	if err := a.Domains.Remove(ctx, principal(ctx).UserID, id, in.Domain); err != nil {
		return nil, domainProblem(err)
	}
	return nil, nil
}

func (a *API) verifyDomain(ctx context.Context, in *domainInput) (*domainOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	// Counted before anything is looked up: each check is DNS queries
	// this process makes on the member's behalf.
	if err := a.limit(ctx, "domains:verify:user:"+principal(ctx).UserID.String(), a.Limits.DomainChecks); err != nil {
		return nil, err
	}
	d, err := a.Domains.Verify(ctx, principal(ctx).UserID, id, in.Domain)
	if err != nil {
		return nil, domainProblem(err)
	}
	return &domainOutput{Body: a.domainOut(d)}, nil
}
