// Package api is the service.
package api
