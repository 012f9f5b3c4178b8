//! io_uring storage driver (being written).
