package edge

import "bytes"

// field is one header line, as slices of the connection's buffer.
type field struct {
	name, value []byte
	drop        bool // hop-by-hop, or one the edge sets itself
	// spoofable: a header only a proxy in front may set (the client's
	// address, its scheme); dropped unless the peer is trusted.
	spoofable bool
}

// request is a parsed client request head. Its slices point into the
// connection's buffer and are valid until the next request is read.
type request struct {
	method, target, host []byte
	fields               [maxHeaders]field
	n                    int
	headEnd              int
	contentLength        int64
	hasLength            bool
	close                bool // the client asked to close after this response
	teTrailers           bool
	rid, cfIP, xfProto   []byte
	body                 []byte
}

type parseResult int

const (
	parseOK parseResult = iota
	parseMore
	parseFallback
)

// parse reads a request head from b. It accepts only what it can forward
// exactly as the stdlib path would; everything else is parseFallback, and
// the stdlib path answers it (a 400 for what is malformed, a websocket
// for an Upgrade). The rules are strict on purpose: a lenient parser in
// front of apps is how requests get smuggled.
func (q *request) parse(b []byte) parseResult {
	q.method, q.target, q.host, q.rid, q.cfIP, q.xfProto, q.body = nil, nil, nil, nil, nil, nil, nil
	q.n, q.headEnd, q.contentLength = 0, 0, 0
	q.hasLength, q.close, q.teTrailers = false, false, false

	line, next, res := nextLine(b, 0)
	if res != parseOK {
		return res
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 || sp1 > 20 || !isToken(line[:sp1]) {
		return parseFallback
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 || string(rest[sp2+1:]) != "HTTP/1.1" {
		return parseFallback
	}
	q.method, q.target = line[:sp1], rest[:sp2]
	if q.target[0] != '/' || string(q.method) == "CONNECT" {
		return parseFallback // absolute-form, authority-form, "*"
	}
	for _, c := range q.target {
		if c <= ' ' || c >= 0x7f {
			return parseFallback
		}
	}
	for {
		line, next, res = nextLine(b, next)
		if res != parseOK {
			return res
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' || q.n == maxHeaders {
			return parseFallback // obsolete line folding; too many fields
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return parseFallback
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return parseFallback
			}
		}
		f := &q.fields[q.n]
		q.n++
		f.name, f.value, f.drop, f.spoofable = name, value, false, false
		if !q.classify(f) {
			return parseFallback
		}
	}
	if q.host == nil {
		return parseFallback
	}
	q.headEnd = next
	return parseOK
}

// classify notes what the edge needs from a request field and marks the
// ones it does not forward; false sends the request to the stdlib path.
func (q *request) classify(f *field) bool {
	n, v := f.name, f.value
	switch len(n) {
	case 2:
		if eqFold(n, "te") {
			f.drop = true
			q.teTrailers = q.teTrailers || hasToken(v, "trailers")
		}
	case 4:
		if eqFold(n, "host") {
			if q.host != nil || !validHost(v) {
				return false
			}
			q.host, f.drop = v, true
		}
	case 6:
		if eqFold(n, "expect") {
			return false
		}
	case 7:
		switch {
		case eqFold(n, "upgrade"):
			return false
		case eqFold(n, "trailer"):
			f.drop = true
		}
	case 9:
		switch {
		case eqFold(n, "forwarded"):
			f.drop = true
		case eqFold(n, "x-real-ip"):
			f.spoofable = true
		}
	case 10:
		switch {
		case eqFold(n, "connection"):
			f.drop = true
			return q.connection(v)
		case eqFold(n, "keep-alive"):
			f.drop = true
		}
	case 12:
		if eqFold(n, "x-request-id") {
			if q.rid == nil {
				q.rid = v
			}
			f.drop = true
		}
	case 14:
		if eqFold(n, "content-length") {
			if q.hasLength {
				return false
			}
			l, ok := parseLength(v)
			if !ok || l > smallBody {
				return false // streamed uploads take the stdlib path
			}
			q.contentLength, q.hasLength, f.drop = l, true, true
		} else if eqFold(n, "true-client-ip") {
			f.spoofable = true
		}
	case 15:
		switch {
		case eqFold(n, "x-forwarded-for"):
			f.drop = true
		case eqFold(n, "x-forwarded-ssl"):
			f.spoofable = true
		}
	case 16:
		switch {
		case eqFold(n, "x-forwarded-host"), eqFold(n, "proxy-connection"):
			f.drop = true
		case eqFold(n, "cf-connecting-ip"):
			if q.cfIP == nil {
				q.cfIP = v
			}
			f.spoofable = true
		}
	case 17:
		switch {
		case eqFold(n, "transfer-encoding"):
			return false
		case eqFold(n, "x-forwarded-proto"):
			if q.xfProto == nil {
				q.xfProto = v
			}
			f.drop = true
		}
	case 18:
		if eqFold(n, "proxy-authenticate") {
			f.drop = true
		}
	case 19:
		switch {
		case eqFold(n, "proxy-authorization"), eqFold(n, "x-zeitwork-instance"):
			f.drop = true
		}
	case 22:
		if eqFold(n, "x-zeitwork-proxy-token") {
			f.drop = true
		}
	}
	return true
}

// connection accepts the Connection values that name no other header
// (which the stdlib path would have to strip as hop-by-hop).
func (q *request) connection(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = trimOWS(v[:i]), v[i+1:]
		} else {
			tok, v = trimOWS(v), nil
		}
		switch {
		case len(tok) == 0, eqFold(tok, "keep-alive"):
		case eqFold(tok, "close"):
			q.close = true
		default:
			return false
		}
	}
	return true
}

// nextLine returns the line starting at b[i] without its CRLF, and where
// the next one starts. A line ending in a bare LF is parseFallback.
func nextLine(b []byte, i int) (line []byte, next int, res parseResult) {
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return nil, i, parseMore
	}
	if j == 0 || b[i+j-1] != '\r' {
		return nil, i, parseFallback
	}
	line = b[i : i+j-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, i, parseFallback
	}
	return line, i + j + 1, parseOK
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// eqFold compares b with the lower-case ASCII s, ignoring b's case.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// hasToken says whether the comma-separated list v has the token t.
func hasToken(v []byte, t string) bool {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = trimOWS(v[:i]), v[i+1:]
		} else {
			tok, v = trimOWS(v), nil
		}
		if i := bytes.IndexByte(tok, ';'); i >= 0 {
			tok = trimOWS(tok[:i])
		}
		if eqFold(tok, t) {
			return true
		}
	}
	return false
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isToken: an RFC 9110 token (method, field name).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return true
}

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validHost is net/http's check of a Host header's bytes.
func validHost(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !hostByte[c] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()
