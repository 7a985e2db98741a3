// Package cloudflare speaks Cloudflare's v4 DNS API from both ends.
// Provider manages records through it: the DNS-01 challenges of the
// platform domains' wildcard certificates (internal/certs). Emulator serves
// it and publishes the records into a DNS server, so that tests and local
// runs exercise the real wire protocol without a Cloudflare account. Only the
// part of the API those need is here: zones by name, and a zone's DNS
// records listed, created and deleted.
package cloudflare

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// envelope wraps every v4 response, success or not.
type envelope struct {
	Success    bool            `json:"success"`
	Errors     []apiError      `json:"errors"`
	Messages   []apiError      `json:"messages"`
	Result     json.RawMessage `json:"result"`
	ResultInfo *resultInfo     `json:"result_info,omitempty"`
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// resultInfo is the pagination of a list.
type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

// zone is the part of Cloudflare's zone object used here.
type zone struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Paused      bool     `json:"paused"`
	Type        string   `json:"type"`
	NameServers []string `json:"name_servers"`
}

// record is a DNS record as the API returns it: Name is fully qualified
// without the trailing dot, TTL 1 means "automatic".
type record struct {
	ID         string    `json:"id"`
	ZoneID     string    `json:"zone_id"`
	ZoneName   string    `json:"zone_name"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Content    string    `json:"content"`
	Proxiable  bool      `json:"proxiable"`
	Proxied    bool      `json:"proxied"`
	TTL        int       `json:"ttl"`
	Comment    *string   `json:"comment"`
	Tags       []string  `json:"tags"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`
}

// newRecord is the body of a create.
type newRecord struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	Content string `json:"content"`
	TTL     int    `json:"ttl,omitempty"`
	Proxied bool   `json:"proxied"`
}

// encodeTXT renders text as a TXT record's content the way Cloudflare
// documents it: quoted RFC 1035 character-strings of at most 255 bytes.
func encodeTXT(text string) string {
	var b strings.Builder
	for first := true; first || text != ""; first = false {
		chunk := text
		if len(chunk) > 255 {
			chunk = chunk[:255]
		}
		text = text[len(chunk):]
		if !first {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		for i := 0; i < len(chunk); i++ {
			switch c := chunk[i]; {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20 || c > 0x7e:
				fmt.Fprintf(&b, "\\%03d", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

// decodeTXT is the text a TXT record's content stands for. Content that is
// not quoted is taken literally, as Cloudflare does for records created
// before it asked for quotes (and by clients that still send none).
func decodeTXT(content string) (string, error) {
	if !strings.HasPrefix(content, `"`) {
		return content, nil
	}
	var b strings.Builder
	s := content
	for s != "" {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != '"' {
			return "", fmt.Errorf("TXT content %q: text outside quotes", content)
		}
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] != '\\' {
				b.WriteByte(s[i])
				continue
			}
			if i+3 < len(s) && isDigits(s[i+1:i+4]) {
				n, _ := strconv.Atoi(s[i+1 : i+4])
				if n > 255 {
					return "", fmt.Errorf("TXT content %q: bad escape", content)
				}
				b.WriteByte(byte(n))
				i += 3
				continue
			}
			if i+1 == len(s) {
				return "", fmt.Errorf("TXT content %q: dangling backslash", content)
			}
			i++
			b.WriteByte(s[i])
		}
		if i == len(s) {
			return "", fmt.Errorf("TXT content %q: unterminated quote", content)
		}
		s = s[i+1:]
	}
	return b.String(), nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// fqdn normalises a DNS name to lower case without the trailing dot, the
// form Cloudflare uses in its records.
func fqdn(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
