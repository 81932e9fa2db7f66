//! A read-only FUSE driver for anything that implements [`View`].
//!
//! Why a separate crate: the FUSE layer has its own failure modes (a kernel protocol, signal
//! handling, stale mounts, thread pools) that have nothing to do with how backups are stored.
//! Keeping it behind the small [`View`] trait lets it be tested for real, with `ls`, `cat`,
//! `tar` and friends against an in-memory tree, and lets the repository side be tested without
//! a kernel in the loop.
//!
//! Why read-only: a backup is evidence of the past. Writes are refused with `EROFS` at the
//! mount (`ro`) and again in the driver, so no bug or tool can alter what is served.
//!
//! Entry points: [`mount_foreground`] (serve until a signal or an external unmount),
//! [`mount_background`] (serve from threads, unmount on drop) and [`unmount`] (also clears
//! stale mounts left by a killed server).

#![warn(missing_docs)]

pub mod driver;
pub mod lifecycle;
mod stats;
pub mod view;

pub use driver::{Driver, DEFAULT_WORKERS};
pub use lifecycle::{
    is_mounted, is_stale_mount, mount_background, mount_foreground, unmount, MountError,
    MountHandle, MountOptions,
};
pub use view::*;
