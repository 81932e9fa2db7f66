//! Maintenance: verification (check), retention (forget, WAL retention), giving space back
//! (prune), repair after damage (repair) and accounting (stats).

pub mod check;
pub mod drill;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod stats;
pub mod wal_retention;
