//! Maintenance: verification (check) and giving space back (prune).

pub mod check;
pub mod prune;
pub mod stats;
