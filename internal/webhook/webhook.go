// Package webhook receives the GitHub App's webhooks: it authenticates each
// delivery by its signature, records it once per X-GitHub-Delivery in
// webhook_deliveries, and acts on it in the same transaction: a push to a
// project's production branch becomes a deployment and its build task, a
// push to another branch a preview deployment of that branch, and a deleted
// branch stops its previews; installation events keep github_installations
// current.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
)

// MaxBody is GitHub's own cap on a webhook payload (25 MiB): anything
// larger did not come from GitHub.
const MaxBody = 25 << 20

// maxHeader bounds X-GitHub-Delivery (a GUID) and X-GitHub-Event before
// they reach the database.
const maxHeader = 100

// Receiver is the GitHub webhook endpoint.
type Receiver struct {
	pool   *pgxpool.Pool
	queue  *queue.Queue
	secret []byte
	log    *slog.Logger
	api    httpapi.Server
	// limiter and limit count deliveries per installation; see throttle.
	limiter *ratelimit.Limiter
	limit   ratelimit.Limit
}

// New returns a receiver verifying deliveries with secret (the GitHub App's
// webhook secret), recording them in pool and enqueuing builds on q.
func New(pool *pgxpool.Pool, q *queue.Queue, secret string, log *slog.Logger) (*Receiver, error) {
	if secret == "" {
		// An empty secret would make every signature computable by anyone.
		return nil, errors.New("webhook: the webhook secret is empty")
	}
	return &Receiver{pool: pool, queue: q, secret: []byte(secret), log: log, api: httpapi.Server{Log: log}}, nil
}

// LimitInstallations caps the deliveries each App installation may make
// per window; without it every authentic delivery is taken.
func (rc *Receiver) LimitInstallations(l *ratelimit.Limiter, per ratelimit.Limit) {
	rc.limiter, rc.limit = l, per
}

// Handler answers POSTs of GitHub deliveries. Answers are JSON: a Result
// on success, an httpapi.ErrorBody otherwise. A 5xx means nothing was
// recorded, so GitHub's redelivery of it is processed afresh.
func (rc *Receiver) Handler() http.Handler {
	return rc.api.Handle(rc.serve)
}

// Result is the answer to an accepted delivery.
type Result struct {
	DeliveryID string `json:"delivery_id"`
	Status     Status `json:"status"`
	// Reason says why a delivery was ignored or failed.
	Reason string `json:"reason,omitempty"`
	// Deployments are the ids of the deployments the delivery created.
	Deployments []uuid.UUID `json:"deployments,omitempty"`
	// Duplicate: this delivery was received before and not acted on again.
	Duplicate bool `json:"duplicate,omitempty"`
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return httpapi.MethodNotAllowed(r, http.MethodPost)
	}
	// The signature's shape is checked before the body is read, its value
	// right after: nothing else about an unauthenticated request matters.
	mac, ok := parseSignature(r.Header.Get("X-Hub-Signature-256"))
	if !ok {
		return unauthorized()
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return &httpapi.Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large",
				Message: fmt.Sprintf("body is larger than %d bytes", MaxBody)}
		}
		return httpapi.BadRequest("reading the body failed").With(err)
	}
	h := hmac.New(sha256.New, rc.secret)
	h.Write(body)
	if !hmac.Equal(h.Sum(nil), mac) {
		return unauthorized()
	}

	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			// The form encoding GitHub can also send wraps the JSON in a
			// field; the app is configured for JSON, so refuse the rest.
			return &httpapi.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
				Message: "body must be application/json"}
		}
	}
	event := r.Header.Get("X-GitHub-Event")
	delivery := r.Header.Get("X-GitHub-Delivery")
	switch {
	case event == "" || len(event) > maxHeader || !printable(event):
		return httpapi.BadRequest("missing or invalid X-GitHub-Event header")
	case delivery == "" || len(delivery) > maxHeader || !printable(delivery):
		return httpapi.BadRequest("missing or invalid X-GitHub-Delivery header")
	}
	if err := rc.throttle(r.Context(), w, body); err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	res, err := rc.receive(r.Context(), Delivery{ID: delivery, Event: event, PayloadSHA256: hex.EncodeToString(sum[:]), Payload: body})
	switch {
	case errors.Is(err, ErrReplayMismatch):
		return httpapi.Conflict("delivery %s was received before with a different body", delivery).With(err)
	case err != nil:
		return fmt.Errorf("webhook %s delivery %s: %w", event, delivery, err)
	}
	if res.Status == StatusFailed && !res.Duplicate {
		// Authentic but unusable (GitHub's payload did not parse): recorded
		// so it can be looked at, refused so it shows in GitHub's log.
		return httpapi.Invalid("%s", res.Reason)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

// throttle counts a delivery against its installation's limit, and
// refuses it (429, Retry-After, nothing recorded) past the limit. It runs
// after the signature check, so only GitHub's own deliveries count and
// nobody else can spend an installation's allowance.
//
// A 429 to GitHub is not free: GitHub does not retry a failed delivery by
// itself, so a refused push is not deployed until someone redelivers it
// (the App's advanced settings) or pushes again. The limit is therefore
// generous: it keeps one runaway installation (a script pushing in a
// loop) from flooding the build queue for everyone, not a busy one from
// deploying.
func (rc *Receiver) throttle(ctx context.Context, w http.ResponseWriter, body []byte) error {
	if rc.limiter == nil || rc.limit.Off() {
		return nil
	}
	var p struct {
		Installation struct {
			ID int64 `json:"id"`
		} `json:"installation"`
	}
	// A payload that does not parse is recorded as failed by receive; one
	// without an installation (the App's own ping) has nothing to count.
	if json.Unmarshal(body, &p) != nil || p.Installation.ID == 0 {
		return nil
	}
	err := rc.limiter.Allow(ctx, "webhook:installation:"+strconv.FormatInt(p.Installation.ID, 10), rc.limit)
	if ex, ok := ratelimit.IsExceeded(err); ok {
		w.Header().Set("Retry-After", ex.Seconds())
		return &httpapi.Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: fmt.Sprintf("installation %d sent more than %d deliveries in %s: retry in %s s", p.Installation.ID, rc.limit.Max, rc.limit.Per, ex.Seconds())}
	}
	return err
}

func unauthorized() error {
	return &httpapi.Error{Status: http.StatusUnauthorized, Code: "unauthorized",
		Message: "missing or invalid X-Hub-Signature-256"}
}

// parseSignature decodes "sha256=<64 hex digits>".
func parseSignature(header string) ([]byte, bool) {
	hexMAC, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexMAC) != 2*sha256.Size {
		return nil, false
	}
	mac, err := hex.DecodeString(hexMAC)
	return mac, err == nil
}

func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < 0x21 || c > 0x7e })
}

// Delivery is one authenticated webhook delivery.
type Delivery struct {
	ID            string // X-GitHub-Delivery
	Event         string // X-GitHub-Event
	PayloadSHA256 string // hex
	Payload       []byte
}

// ErrReplayMismatch: a delivery id that was recorded with another body.
var ErrReplayMismatch = errors.New("delivery id reused with a different payload")

// outcome is what handling a delivery's event decided.
type outcome struct {
	status      Status
	reason      string
	deployments []uuid.UUID
}

func ignored(format string, args ...any) outcome {
	return outcome{status: StatusIgnored, reason: fmt.Sprintf(format, args...)}
}

// receive records d and acts on it in one transaction, so a delivery is
// either recorded with all its effects or not at all.
func (rc *Receiver) receive(ctx context.Context, d Delivery) (Result, error) {
	res := Result{DeliveryID: d.ID}
	err := pgx.BeginFunc(ctx, rc.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.WebhookDeliveryInsert(ctx, db.WebhookDeliveryInsertParams{
			ID: id.New(), DeliveryID: d.ID, Event: d.Event, PayloadSha256: d.PayloadSHA256,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			// Seen before (a redelivery, or two racing copies: the insert
			// waited for the other to commit).
			prev, err := q.WebhookDeliveryGetByDeliveryID(ctx, d.ID)
			if err != nil {
				return fmt.Errorf("read recorded delivery: %w", err)
			}
			if !hmac.Equal([]byte(prev.PayloadSha256), []byte(d.PayloadSHA256)) || prev.Event != d.Event {
				return ErrReplayMismatch
			}
			res.Duplicate, res.Status = true, Status(prev.Status)
			if prev.Error != nil {
				res.Reason = *prev.Error
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		out, err := rc.handle(ctx, tx, d)
		if err != nil {
			return err
		}
		var reason *string
		if out.reason != "" {
			// Reasons quote the payload, and Postgres text cannot hold NUL.
			out.reason = strings.ReplaceAll(out.reason, "\x00", "")
			reason = &out.reason
		}
		if _, err := q.WebhookDeliverySetStatus(ctx, db.WebhookDeliverySetStatusParams{
			ID: row.ID, Status: string(out.status), Error: reason,
		}); err != nil {
			return fmt.Errorf("finish delivery: %w", err)
		}
		res.Status, res.Reason, res.Deployments = out.status, out.reason, out.deployments
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// handle acts on d's event inside tx. An error rolls everything back;
// a payload that cannot be used is an outcome (failed or ignored), not an
// error, so that it is recorded.
func (rc *Receiver) handle(ctx context.Context, tx pgx.Tx, d Delivery) (outcome, error) {
	switch d.Event {
	case "ping":
		return outcome{status: StatusProcessed}, nil
	case "push":
		return rc.push(ctx, tx, d.Payload)
	case "installation":
		return installation(ctx, tx, d.Payload)
	case "installation_repositories":
		return installationRepositories(ctx, tx, d.Payload)
	}
	return ignored("event %q is not handled", d.Event), nil
}

// failed is the outcome of a payload that does not parse.
func failed(event string, err error) outcome {
	return outcome{status: StatusFailed, reason: fmt.Sprintf("%s payload: %v", event, err)}
}

// decode parses a payload into one of go-github's event types.
func decode(payload []byte, v any) error {
	return json.Unmarshal(payload, v)
}

// Prune deletes deliveries received before before and returns how many.
// GitHub redelivers only recent deliveries (three days back), so older
// records no longer guard against anything.
func (rc *Receiver) Prune(ctx context.Context, before time.Time) (int64, error) {
	n, err := db.New(rc.pool).WebhookDeliveryDeleteBefore(ctx, before)
	if err != nil {
		return 0, fmt.Errorf("prune webhook deliveries: %w", err)
	}
	return n, nil
}
