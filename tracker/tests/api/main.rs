//! Black-box tests of the tracker: the real server (`run()` on 127.0.0.1:0)
//! on a fresh real database per test, driven over HTTP. Each behavioural
//! test runs against SQLite, MariaDB/MySQL and PostgreSQL (see `helpers`).
#![allow(clippy::unwrap_used)]

mod helpers;

mod bad_input;
mod lifecycle;
mod liveness;
mod operations;
mod pagination;
mod security;
mod store;
