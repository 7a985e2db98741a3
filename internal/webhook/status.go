package webhook

// Status is where a recorded delivery stands (webhook_deliveries.status).
type Status string

const (
	// StatusReceived: recorded, not yet acted on. A delivery is acted on
	// in the transaction that records it, so no committed row stays here.
	StatusReceived Status = "received"
	// StatusProcessed: acted on.
	StatusProcessed Status = "processed"
	// StatusIgnored: nothing to do; the row's error says why.
	StatusIgnored Status = "ignored"
	// StatusFailed: authentic but unusable; the row's error says why.
	StatusFailed Status = "failed"
)
