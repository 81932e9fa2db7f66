//! PostgreSQL orchestration used by `pitr` and `pg-at`: which base backup serves T
//! ([`base`]), the recovery settings and their quoting ([`settings`]), a data directory ready
//! to recover ([`pitr`]), a server at T with RAII cleanup ([`server`], over [`layers`] in a
//! private [`scratch`]), and the environment of every child ([`env`]). The CLI only parses and
//! prints.

pub mod base;
pub mod drill;
pub mod env;
pub mod layers;
pub mod pitr;
pub mod scratch;
pub mod server;
pub mod settings;
