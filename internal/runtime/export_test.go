package runtime

// SetAfterMarksRead runs f inside Status, after the instance's marks are
// read and before its task is; nil removes it.
func SetAfterMarksRead(f func()) { afterMarksRead = f }
