//! marathon-rs shell (in progress).
