//! Black-box tests of the tracker: the real server (`run()` on 127.0.0.1:0)
//! on a fresh real database per test, driven over HTTP. Each behavioural
//! test runs against SQLite, MariaDB/MySQL and PostgreSQL (see `helpers`).
//!
//! Own `main` (libtest-mimic, `harness = false` in Cargo.toml), so that the
//! output says which backends ran and shows an unreachable one's tests as
//! ignored with the reason: see `helpers::backend_trial`. Each module's
//! `trials()` comes from `backend_tests!`; a new module adds one line here.
#![allow(clippy::unwrap_used)]

use std::process::ExitCode;

mod helpers;

mod bad_input;
mod connections;
mod lifecycle;
mod limits;
mod liveness;
mod operations;
mod pagination;
mod reachability;
mod search;
mod security;
mod store;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(bad_input::trials());
    trials.extend(connections::trials());
    trials.extend(lifecycle::trials());
    trials.extend(limits::trials());
    trials.extend(liveness::trials());
    trials.extend(operations::trials());
    trials.extend(operations::other_trials());
    trials.extend(pagination::trials());
    trials.extend(reachability::trials());
    trials.extend(search::trials());
    trials.extend(security::trials());
    trials.extend(store::trials());
    trials.push(libtest_mimic::Trial::test(
        "harness::every_test_is_collected",
        every_test_is_collected,
    ));
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    helpers::print_backends(&args, &trials);
    libtest_mimic::run(&args, trials).exit_code()
}

/// This target has no libtest: a `#[test]` here would compile and never
/// run. Fails if a test module has one instead of going through `trials()`.
fn every_test_is_collected() -> Result<(), libtest_mimic::Failed> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for (n, line) in text.lines().enumerate() {
            if ["#[test]", "#[tokio::test"]
                .iter()
                .any(|a| line.trim_start().starts_with(a))
            {
                found.push(format!("{}:{}", path.display(), n + 1));
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "these tests would never run (use backend_tests! or helpers::trial and list the module in main.rs): {}",
            found.join(", ")
        )
        .into())
    }
}
