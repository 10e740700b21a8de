//! Garbage collection and repair (q-gc): being written.
