//! Maintenance: verification now; retention and prune later.

pub mod check;
