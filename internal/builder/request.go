package builder

import "time"

// timeoutMargin is how much longer River lets a build task run than the
// build's own deadline, so the builder records the timeout itself.
const timeoutMargin = time.Minute
