package edge

import (
	"crypto/tls"
	"testing"
)

// SelfSignedCertificate is the tests' certificate (testTLS) for the tests
// outside the package: it names 127.0.0.1 and *.zeitwork.test.
func SelfSignedCertificate(tb testing.TB) tls.Certificate {
	return testTLS(tb).server.Certificates[0]
}
