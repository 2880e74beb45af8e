//! The subcommands, one module each: [`serve`] (share a folder and keep the
//! tracker informed), [`list`] (`files`, `peers`) and [`get`] (`get`,
//! `browse`).
//!
//! They print their results to stdout (tables, or JSON with `--json`) and
//! everything else (progress, warnings about sources) to stderr. These are
//! the async edges of the program: they talk to the tracker with reqwest and
//! hand the blocking work (hashing, serving, downloading) to
//! [`crate::transfer`] and [`crate::share`] on tokio's blocking pool.

pub mod get;
pub mod list;
pub mod serve;
