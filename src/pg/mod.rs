//! PostgreSQL orchestration used by `pitr` and `pg-at`: the environment their children get.
//! The CLI only parses and prints.

pub mod env;
