package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Provider manages DNS records in Cloudflare zones through the v4 API at a
// base URL of our choosing (github.com/libdns/cloudflare hard-codes
// Cloudflare's). It implements libdns's ZoneLister, RecordAppender and
// RecordDeleter, which is what an ACME DNS-01 solver needs.
type Provider struct {
	base   string
	token  zlog.Secret
	client *http.Client

	mu    sync.Mutex
	zones map[string]string // zone name -> id; zone ids never change
}

var (
	_ libdns.ZoneLister     = (*Provider)(nil)
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
)

// NewProvider returns a Provider for the API at baseURL
// (https://api.cloudflare.com/client/v4) that authenticates with an API
// token allowed Zone:Read and DNS:Edit on the zones it is used for.
func NewProvider(baseURL string, token zlog.Secret) *Provider {
	return &Provider{
		base:   strings.TrimSuffix(baseURL, "/"),
		token:  token,
		client: &http.Client{Timeout: 30 * time.Second},
		zones:  map[string]string{},
	}
}

// ListZones returns every zone the token can read.
func (p *Provider) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	var all []libdns.Zone
	for page := 1; ; page++ {
		q := url.Values{"page": {strconv.Itoa(page)}, "per_page": {"50"}}
		var zs []zone
		info, err := p.do(ctx, http.MethodGet, "/zones", q, nil, &zs)
		if err != nil {
			return nil, err
		}
		for _, z := range zs {
			all = append(all, libdns.Zone{Name: z.Name})
		}
		if info == nil || page >= info.TotalPages || len(zs) == 0 {
			return all, nil
		}
	}
}

// AppendRecords creates recs in zone and returns them as created.
func (p *Provider) AppendRecords(ctx context.Context, zoneName string, recs []libdns.Record) ([]libdns.Record, error) {
	zoneName = fqdn(zoneName)
	id, err := p.zoneID(ctx, zoneName)
	if err != nil {
		return nil, err
	}
	var created []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		body := newRecord{Type: rr.Type, Name: fqdn(libdns.AbsoluteName(rr.Name, zoneName)), Content: rr.Data, TTL: ttl(rr.TTL)}
		if rr.Type == "TXT" {
			body.Content = encodeTXT(rr.Data)
		}
		var r record
		if _, err := p.do(ctx, http.MethodPost, "/zones/"+url.PathEscape(id)+"/dns_records", nil, body, &r); err != nil {
			return created, err
		}
		lr, err := toLibdns(r, zoneName)
		if err != nil {
			return created, err
		}
		created = append(created, lr)
	}
	return created, nil
}

// DeleteRecords deletes the records of zone that match recs (an empty type,
// TTL or value matches any) and returns those it deleted.
func (p *Provider) DeleteRecords(ctx context.Context, zoneName string, recs []libdns.Record) ([]libdns.Record, error) {
	zoneName = fqdn(zoneName)
	id, err := p.zoneID(ctx, zoneName)
	if err != nil {
		return nil, err
	}
	var deleted []libdns.Record
	for _, rec := range recs {
		want := rec.RR()
		q := url.Values{"name": {fqdn(libdns.AbsoluteName(want.Name, zoneName))}, "per_page": {"100"}}
		if want.Type != "" {
			q.Set("type", want.Type)
		}
		// Matching on the decoded value rather than the content filter:
		// a TXT record's content may be quoted or not, chunked or not.
		var rs []record
		if _, err := p.do(ctx, http.MethodGet, "/zones/"+url.PathEscape(id)+"/dns_records", q, nil, &rs); err != nil {
			return deleted, err
		}
		for _, r := range rs {
			lr, err := toLibdns(r, zoneName)
			if err != nil {
				return deleted, err
			}
			got := lr.RR()
			if (want.Data != "" && got.Data != want.Data) || (want.TTL != 0 && got.TTL != want.TTL) {
				continue
			}
			if _, err := p.do(ctx, http.MethodDelete, "/zones/"+url.PathEscape(id)+"/dns_records/"+url.PathEscape(r.ID), nil, nil, nil); err != nil {
				return deleted, err
			}
			deleted = append(deleted, lr)
		}
	}
	return deleted, nil
}

// zoneID looks up the id of the zone named name.
func (p *Provider) zoneID(ctx context.Context, name string) (string, error) {
	p.mu.Lock()
	id, ok := p.zones[name]
	p.mu.Unlock()
	if ok {
		return id, nil
	}
	var zs []zone
	if _, err := p.do(ctx, http.MethodGet, "/zones", url.Values{"name": {name}}, nil, &zs); err != nil {
		return "", err
	}
	if len(zs) != 1 {
		return "", fmt.Errorf("cloudflare: zone %q: %d zones of that name visible to the token", name, len(zs))
	}
	p.mu.Lock()
	p.zones[name] = zs[0].ID
	p.mu.Unlock()
	return zs[0].ID, nil
}

// do makes one API call and decodes the result into out.
func (p *Provider) do(ctx context.Context, method, path string, q url.Values, body, out any) (*resultInfo, error) {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("cloudflare %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("cloudflare %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token.Reveal())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cloudflare %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("cloudflare %s %s: read response: %w", method, path, err)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("cloudflare %s %s: HTTP %d, not an API response: %w", method, path, resp.StatusCode, err)
	}
	if resp.StatusCode >= 300 || !env.Success {
		msgs := make([]string, 0, len(env.Errors))
		for _, e := range env.Errors {
			msgs = append(msgs, fmt.Sprintf("%d %s", e.Code, e.Message))
		}
		return nil, fmt.Errorf("cloudflare %s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.Join(msgs, "; "))
	}
	if out != nil {
		if err := json.Unmarshal(env.Result, out); err != nil {
			return nil, fmt.Errorf("cloudflare %s %s: decode result: %w", method, path, err)
		}
	}
	return env.ResultInfo, nil
}

// toLibdns converts an API record to the libdns record it stands for.
func toLibdns(r record, zoneName string) (libdns.Record, error) {
	data := r.Content
	if r.Type == "TXT" {
		var err error
		if data, err = decodeTXT(r.Content); err != nil {
			return nil, fmt.Errorf("cloudflare: record %s: %w", r.ID, err)
		}
	}
	rr := libdns.RR{Name: libdns.RelativeName(r.Name, zoneName), Type: r.Type, Data: data, TTL: time.Duration(r.TTL) * time.Second}
	lr, err := rr.Parse()
	if err != nil {
		return nil, fmt.Errorf("cloudflare: record %s: %w", r.ID, err)
	}
	return lr, nil
}

// ttl is a libdns TTL in the API's terms, where 1 means automatic.
func ttl(d time.Duration) int {
	if s := int(d / time.Second); s > 0 {
		return s
	}
	return 1
}
