//! Locks: being written.
