package client

// The client is generated from the public API's OpenAPI document, built
// in-process from internal/api; TestGeneratedClientIsCurrent fails when the
// checked-in files differ from what this would write.
//go:generate go test -run TestGeneratedClientIsCurrent -update .
