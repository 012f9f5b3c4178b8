//! File-emulated zoned device (being written).
