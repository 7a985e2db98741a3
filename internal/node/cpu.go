package node

// CPURequestDivisor is how much smaller an instance's CPU request, what its
// node reserves for it, is than its limit, what the kernel lets it use.
//
// CPU is compressible: an instance held to less than its limit runs slower
// but keeps running, and most instances idle far below their limit, so a
// node may promise more CPU in limits than it has. The request is what every
// instance is sure to get when all of them are busy at once (the kernel
// shares a contended CPU in proportion to the requests, see
// runtime.Spec.CPURequestMillis). Memory is not compressible, a node out of
// it kills, so memory stays reserved in full.
//
// It is a constant, not a setting, because the instance row records the
// limit only: what Allocate took is recomputed from it when it is given
// back, and two operators (or one before and after a restart) with
// different ratios would leak or mint capacity.
const CPURequestDivisor = 4

// CPURequest is the CPU a node reserves for an instance limited to
// limitMillis: a quarter of it, rounded up, at least 1.
func CPURequest(limitMillis int32) int32 {
	return max(1, (limitMillis+CPURequestDivisor-1)/CPURequestDivisor)
}
