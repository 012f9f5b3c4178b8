//! In-memory zoned device (being written).
