package cloudflare

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DNS is where an Emulator publishes its zones' records, as a real
// Cloudflare account publishes them on its name servers. *dnstest.Server
// is one.
type DNS interface {
	SetA(name string, ips ...net.IP)
	SetCNAME(name, target string)
	SetTXT(name string, values ...string)
	Delete(name string)
}

// Emulator serves the v4 API's zone list and DNS record list, create and
// delete under /client/v4, as api.cloudflare.com does: Bearer token
// authentication, the {success, errors, messages, result, result_info}
// envelope, pagination, Cloudflare's error codes, names completed with the
// zone, identical records refused. It is the one stand-in for a
// third-party service that tests use; everything a client sends it must
// also work against Cloudflare itself.
type Emulator struct {
	token string
	dns   DNS
	mux   *http.ServeMux

	mu      sync.Mutex
	zones   []zone
	records []record // in creation order, as Cloudflare lists them
}

// NewEmulator returns an emulator that accepts token and publishes A,
// AAAA, CNAME and TXT records into dns.
func NewEmulator(token string, dns DNS) *Emulator {
	e := &Emulator{token: token, dns: dns, mux: http.NewServeMux()}
	e.mux.HandleFunc("GET /client/v4/zones", e.listZones)
	e.mux.HandleFunc("GET /client/v4/zones/{zone}/dns_records", e.listRecords)
	e.mux.HandleFunc("POST /client/v4/zones/{zone}/dns_records", e.createRecord)
	e.mux.HandleFunc("DELETE /client/v4/zones/{zone}/dns_records/{id}", e.deleteRecord)
	e.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, 7003, fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", strings.TrimPrefix(r.URL.Path, "/client/v4")))
	})
	return e
}

// AddZone creates an active zone named name and returns its id.
func (e *Emulator) AddZone(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	z := zone{ID: newID(), Name: fqdn(name), Status: "active", Type: "full",
		NameServers: []string{"ada.ns.cloudflare.com", "bob.ns.cloudflare.com"}}
	e.zones = append(e.zones, z)
	return z.ID
}

// TXT returns the text of the TXT records named name, for tests to see
// what a client left behind.
func (e *Emulator) TXT(name string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, r := range e.records {
		if r.Name == fqdn(name) && r.Type == "TXT" {
			text, _ := decodeTXT(r.Content) // validated on create
			out = append(out, text)
		}
	}
	return out
}

// ServeHTTP authenticates the request and serves it.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		writeError(w, http.StatusBadRequest, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
		return
	}
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(e.token)) != 1 {
		writeError(w, http.StatusForbidden, 10000, "Authentication error")
		return
	}
	e.mux.ServeHTTP(w, r)
}

func (e *Emulator) listZones(w http.ResponseWriter, r *http.Request) {
	page, perPage, ok := pagination(w, r, 20, 50)
	if !ok {
		return
	}
	name := r.URL.Query().Get("name")
	e.mu.Lock()
	var match []zone
	for _, z := range e.zones {
		if name == "" || z.Name == fqdn(name) {
			match = append(match, z)
		}
	}
	e.mu.Unlock()
	writePage(w, match, page, perPage)
}

func (e *Emulator) listRecords(w http.ResponseWriter, r *http.Request) {
	page, perPage, ok := pagination(w, r, 100, 5000)
	if !ok {
		return
	}
	q := r.URL.Query()
	e.mu.Lock()
	z, found := e.zone(r.PathValue("zone"))
	var match []record
	for _, rec := range e.records {
		if rec.ZoneID == z.ID &&
			(q.Get("type") == "" || rec.Type == strings.ToUpper(q.Get("type"))) &&
			(q.Get("name") == "" || rec.Name == fqdn(q.Get("name"))) &&
			(q.Get("content") == "" || rec.Content == q.Get("content")) {
			match = append(match, rec)
		}
	}
	e.mu.Unlock()
	if !found {
		notRouted(w, r)
		return
	}
	writePage(w, match, page, perPage)
}

func (e *Emulator) createRecord(w http.ResponseWriter, r *http.Request) {
	var in newRecord
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, 9207, "Request body is invalid.")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	z, found := e.zone(r.PathValue("zone"))
	if !found {
		notRouted(w, r)
		return
	}
	rec, status, code, msg := e.validate(z, in)
	if code != 0 {
		writeError(w, status, code, msg)
		return
	}
	e.records = append(e.records, rec)
	e.publish(rec.Name)
	writeResult(w, http.StatusOK, rec, nil)
}

// validate turns a create request into the record Cloudflare would store,
// or the error it would answer with.
func (e *Emulator) validate(z zone, in newRecord) (rec record, status, code int, msg string) {
	typ := strings.ToUpper(in.Type)
	name := fqdn(in.Name)
	switch {
	case name == "" || name == "@":
		name = z.Name
	case name != z.Name && !strings.HasSuffix(name, "."+z.Name):
		// Cloudflare reads a name outside the zone as relative to it.
		name += "." + z.Name
	}
	switch typ {
	case "A", "AAAA":
		ip := net.ParseIP(in.Content)
		if ip == nil || (typ == "A") != (ip.To4() != nil) {
			return record{}, http.StatusBadRequest, 9005, fmt.Sprintf("Content for %s record is invalid. Must be a valid IPv%s address.", typ, map[string]string{"A": "4", "AAAA": "6"}[typ])
		}
	case "CNAME":
		if in.Content == "" || strings.ContainsAny(in.Content, " \t\"") {
			return record{}, http.StatusBadRequest, 9007, "Content for CNAME record is invalid."
		}
	case "TXT":
		if _, err := decodeTXT(in.Content); err != nil || in.Content == "" {
			return record{}, http.StatusBadRequest, 9009, "Content for TXT record is invalid."
		}
	case "":
		return record{}, http.StatusBadRequest, 9004, "DNS record type is required."
	default:
		return record{}, http.StatusBadRequest, 1004, "DNS Validation Error: the emulator does not support " + typ + " records"
	}
	ttl := in.TTL
	if ttl == 0 {
		ttl = 1
	}
	if ttl != 1 && (ttl < 60 || ttl > 86400) {
		return record{}, http.StatusBadRequest, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."
	}
	for _, o := range e.records {
		if o.Name != name {
			continue
		}
		if o.Type == typ && o.Content == in.Content {
			return record{}, http.StatusBadRequest, 81058, "An identical record already exists."
		}
		if o.Type == "CNAME" || typ == "CNAME" { // a CNAME stands alone
			return record{}, http.StatusBadRequest, 81053, "An A, AAAA, or CNAME record with that host already exists."
		}
	}
	now := time.Now().UTC()
	return record{
		ID: newID(), ZoneID: z.ID, ZoneName: z.Name, Name: name, Type: typ, Content: in.Content,
		Proxiable: typ != "TXT", Proxied: in.Proxied, TTL: ttl, Tags: []string{},
		CreatedOn: now, ModifiedOn: now,
	}, 0, 0, ""
}

func (e *Emulator) deleteRecord(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	z, found := e.zone(r.PathValue("zone"))
	if !found {
		notRouted(w, r)
		return
	}
	for i, rec := range e.records {
		if rec.ZoneID == z.ID && rec.ID == r.PathValue("id") {
			e.records = append(e.records[:i], e.records[i+1:]...)
			e.publish(rec.Name)
			writeResult(w, http.StatusOK, map[string]string{"id": rec.ID}, nil)
			return
		}
	}
	writeError(w, http.StatusNotFound, 81044, "Record does not exist.")
}

// zone finds a zone by id; e.mu is held.
func (e *Emulator) zone(id string) (zone, bool) {
	for _, z := range e.zones {
		if z.ID == id {
			return z, true
		}
	}
	return zone{}, false
}

// publish makes the DNS server answer for name from the records named
// name; e.mu is held, so DNS changes happen in API order.
func (e *Emulator) publish(name string) {
	var ips []net.IP
	var txt []string
	cname := ""
	for _, r := range e.records {
		if r.Name != name {
			continue
		}
		switch r.Type {
		case "A", "AAAA":
			ips = append(ips, net.ParseIP(r.Content))
		case "CNAME":
			cname = r.Content
		case "TXT":
			text, _ := decodeTXT(r.Content) // validated on create
			txt = append(txt, text)
		}
	}
	e.dns.Delete(name)
	if len(ips) > 0 {
		e.dns.SetA(name, ips...)
	}
	if cname != "" {
		e.dns.SetCNAME(name, cname)
	}
	if len(txt) > 0 {
		e.dns.SetTXT(name, txt...)
	}
}

func notRouted(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, 7003, fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", strings.TrimPrefix(r.URL.Path, "/client/v4")))
}

// pagination reads page and per_page as Cloudflare bounds them.
func pagination(w http.ResponseWriter, r *http.Request, def, limit int) (page, perPage int, ok bool) {
	page, perPage = 1, def
	q := r.URL.Query()
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, 1001, "Invalid page number")
			return 0, 0, false
		}
		page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, 1001, "Invalid per_page value")
			return 0, 0, false
		}
		perPage = min(max(n, 5), limit)
	}
	return page, perPage, true
}

func writePage[T any](w http.ResponseWriter, all []T, page, perPage int) {
	from := min((page-1)*perPage, len(all))
	to := min(from+perPage, len(all))
	items := all[from:to]
	if items == nil {
		items = []T{}
	}
	pages := (len(all) + perPage - 1) / perPage
	writeResult(w, http.StatusOK, items, &resultInfo{Page: page, PerPage: perPage, Count: len(items), TotalCount: len(all), TotalPages: pages})
}

func writeResult(w http.ResponseWriter, status int, result any, info *resultInfo) {
	b, err := json.Marshal(result)
	if err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "service temporarily unavailable")
		return
	}
	writeJSON(w, status, envelope{Success: true, Errors: []apiError{}, Messages: []apiError{}, Result: b, ResultInfo: info})
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, envelope{Errors: []apiError{{Code: code, Message: msg}}, Messages: []apiError{}, Result: json.RawMessage("null")})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// newID returns an id in Cloudflare's form: 32 hex digits.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b) //nolint:errcheck // never fails
	return hex.EncodeToString(b)
}
