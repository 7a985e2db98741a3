package edge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/google/uuid"
)

// The snapshot is the table's arrays, binary: a magic line, the apps
// domain, the node addresses, the number of routes and of instances, each
// route (project, deployment, its instances as id and node number), then
// each name with its route; a
// deployment's own host is a flag, not its 40-odd bytes. A CRC-32 of all
// of it ends the file. At 100,000 projects it is about 10 MiB (the JSON it
// replaces was 80 MiB) and loads in tens of milliseconds.
const snapshotMagic = "zeitwork routes v2\n"

// Name flags in the snapshot, below the route number.
const (
	snapCustom     = 1 << 0
	snapDeployment = 1 << 1 // the name is <deployment id>.<apps domain>
	snapFlagBits   = 2
)

// SaveSnapshot writes t to path atomically (write, then rename), so an edge
// restarted while the database is away serves the last table it had.
func SaveSnapshot(path string, t *Table) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".routes-*")
	if err != nil {
		return fmt.Errorf("route snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, crc), 1<<16)
	writeSnapshot(bw, t)
	err = bw.Flush()
	if err == nil {
		_, err = tmp.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	}
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return fmt.Errorf("route snapshot: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// writeSnapshot writes all but the checksum; bufio.Writer keeps the first
// error, which Flush reports.
func writeSnapshot(w *bufio.Writer, t *Table) {
	var b []byte
	uv := func(v uint64) {
		b = binary.AppendUvarint(b[:0], v)
		w.Write(b) //nolint:errcheck
	}
	str := func(s string) {
		uv(uint64(len(s)))
		w.WriteString(s) //nolint:errcheck
	}
	w.WriteString(snapshotMagic) //nolint:errcheck
	str(t.appsDomain)
	nodes := map[string]uint64{}
	var order []string
	for i := range t.backends {
		if _, ok := nodes[t.backends[i].NodeProxy]; !ok {
			nodes[t.backends[i].NodeProxy] = uint64(len(order))
			order = append(order, t.backends[i].NodeProxy)
		}
	}
	uv(uint64(len(order)))
	for _, n := range order {
		str(n)
	}
	uv(uint64(len(t.routes)))
	backends := 0
	for i := range t.routes {
		backends += int(t.routes[i].n)
	}
	uv(uint64(backends)) // so the reader sizes its array once
	for i := range t.routes {
		r := &t.routes[i]        // by pointer: a copy's arrays would escape, one allocation each
		w.Write(r.project[:])    //nolint:errcheck
		w.Write(r.deployment[:]) //nolint:errcheck
		uv(uint64(r.n))
		for j := r.first; j < r.first+r.n; j++ {
			be := &t.backends[j]
			w.Write(be.InstanceID[:]) //nolint:errcheck
			uv(nodes[be.NodeProxy])
		}
	}
	uv(uint64(len(t.recs)))
	for i := range t.recs {
		rec := &t.recs[i]
		ri := rec.route &^ customBit
		flags := uint64(0)
		if rec.route&customBit != 0 {
			flags |= snapCustom
		}
		if rec.n&recDeployment != 0 {
			flags |= snapDeployment
		}
		uv(uint64(ri)<<snapFlagBits | flags)
		if flags&snapDeployment == 0 {
			str(t.name(rec))
		}
	}
}

// LoadSnapshot reads a table SaveSnapshot wrote (or the JSON of earlier
// versions).
func LoadSnapshot(path string) (*Table, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("route snapshot: %w", err)
	}
	var t *Table
	if bytes.HasPrefix(raw, []byte("{")) {
		t, err = loadJSONSnapshot(raw)
	} else {
		t, err = readSnapshot(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("route snapshot %s is corrupt: %w", path, err)
	}
	return t, nil
}

func loadJSONSnapshot(raw []byte) (*Table, error) {
	var v struct {
		Routes map[string]Route `json:"routes"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return TableOf(v.Routes), nil
}

var errShort = errors.New("truncated")

func readSnapshot(raw []byte) (*Table, error) {
	if len(raw) < len(snapshotMagic)+4 || string(raw[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not a route snapshot")
	}
	body, sum := raw[:len(raw)-4], binary.LittleEndian.Uint32(raw[len(raw)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, errors.New("checksum mismatch")
	}
	r := body[len(snapshotMagic):]
	var bad error
	uv := func(limit uint64) uint64 {
		v, n := binary.Uvarint(r)
		if n <= 0 || v > limit {
			bad = errShort
			r = nil
			return 0
		}
		r = r[n:]
		return v
	}
	take := func(n int) []byte {
		if bad != nil || n > len(r) {
			bad = errShort
			r = nil
			return make([]byte, n)
		}
		b := r[:n]
		r = r[n:]
		return b
	}
	str := func() string { return string(take(int(uv(255)))) }

	t := &Table{appsDomain: str()}
	nodes := make([]string, uv(uint64(len(r))))
	for i := range nodes {
		nodes[i] = str()
	}
	t.routes = make([]route, uv(uint64(len(r)/33)))
	t.backends = make([]Backend, 0, uv(uint64(len(r)/17)))
	for i := range t.routes {
		rt := &t.routes[i]
		copy(rt.project[:], take(16))
		copy(rt.deployment[:], take(16))
		n := uv(uint64(len(r) / 17))
		rt.first, rt.n = uint32(len(t.backends)), uint32(n)
		for range n {
			var id uuid.UUID
			copy(id[:], take(16))
			node := uv(uint64(len(nodes)))
			if bad != nil || node >= uint64(len(nodes)) {
				return nil, errors.New("bad node number")
			}
			t.backends = append(t.backends, Backend{InstanceID: id, NodeProxy: nodes[node]})
		}
		if bad != nil {
			return nil, bad
		}
	}
	names := uv(uint64(len(r)))
	t.reserve(int(names), len(r)) // deployment hosts take no room
	var host []byte
	for range names {
		v := uv(uint64(len(t.routes)-1)<<snapFlagBits | (1<<snapFlagBits - 1))
		ri := uint32(v >> snapFlagBits)
		if bad != nil || int(ri) >= len(t.routes) {
			return nil, errors.New("bad route number")
		}
		if v&snapDeployment != 0 {
			host = deploymentHost(host[:0], t.routes[ri].deployment, t.appsDomain)
		} else {
			host = append(host[:0], take(int(uv(255)))...)
		}
		if bad != nil {
			return nil, bad
		}
		if v&snapCustom != 0 {
			ri |= customBit
		}
		name := unsafe.String(unsafe.SliceData(host), len(host)) // insert copies it
		if t.find(name) >= 0 {
			continue // twice in the file: the first stands, as when it was built
		}
		h32 := uint32(hashOf(name) >> 32)
		if v&snapDeployment != 0 {
			t.copyRec(t, nameRec{hash: h32, n: recDeployment}, ri) // known to be one: no check
		} else {
			t.insert(name, h32, ri)
		}
	}
	if bad != nil {
		return nil, bad
	}
	if len(r) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return t, nil
}
