//! Fault-injecting zoned device (being written).
