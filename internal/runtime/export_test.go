package runtime

// SetAfterMarksRead runs f where Status, or List for an instance it asks
// about alone, has read the instance's marks and not yet its task; nil
// removes it.
func SetAfterMarksRead(f func()) { afterMarksRead = f }
