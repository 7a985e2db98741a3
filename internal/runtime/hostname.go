package runtime

import "github.com/google/uuid"

// hostname is the instance's hostname: its whole id. An id's first hex
// digits are a UUIDv7's timestamp, shared by every instance created in the
// same few seconds, so anything shorter than the random tail named
// neighbours alike; 45 bytes is well within the kernel's 64.
func hostname(id uuid.UUID) string {
	return "instance-" + id.String()
}
