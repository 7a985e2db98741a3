package queue

import (
	"testing"
	"time"
)

// SetFetchPollInterval changes how often workers created after it poll,
// until t ends. Tests that use it must not run in parallel.
func SetFetchPollInterval(t testing.TB, d time.Duration) {
	old := fetchPollInterval
	fetchPollInterval = d
	t.Cleanup(func() { fetchPollInterval = old })
}

// ClientID is the River client's id, as river_leader records its leader.
func (q *Queue) ClientID() string { return q.client.ID() }
