//! Maintenance: verification, retention (forget, WAL retention); prune later.

pub mod check;
pub mod forget;
pub mod wal_retention;
