//! The runner behind every `fuzz_*` test target: proptest strategies and
//! shrinking, with two budgets.
//!
//! - Default (`cargo test`, `cargo xtask test`): a fixed number of cases per
//!   property from a fixed seed, so the run is fast and the same every time.
//!   `PROPTEST_CASES` overrides the number.
//! - `STAGECAST_FUZZ_SECONDS=N` (what `cargo xtask fuzz <target> --seconds N`
//!   sets): each property runs batches from fresh random seeds until N
//!   seconds have passed, then reports how many cases it tried.
//!
//! A failure panics with proptest's shrunk, minimal input, ready to be
//! pasted into a regression test.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

pub use proptest;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Set to a number of seconds to run each property that long.
pub const SECONDS_ENV: &str = "STAGECAST_FUZZ_SECONDS";

/// Cases per batch in a timed run (the deadline is checked between batches).
const FUZZ_BATCH: u32 = 256;

/// The time budget of a timed run, if one was asked for.
pub fn fuzz_budget() -> Option<Duration> {
    let seconds: f64 = std::env::var(SECONDS_ENV).ok()?.trim().parse().ok()?;
    (seconds > 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

/// Check `property` on values from `strategy`: `cases` of them by default,
/// or as many as fit in the [`SECONDS_ENV`] budget.
pub fn check<S: Strategy>(name: &str, cases: u32, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let budget = fuzz_budget();
    let started = Instant::now();
    let mut tried = 0u64;
    loop {
        // Config::default() reads the PROPTEST_* environment variables.
        let mut config = Config { failure_persistence: None, ..Config::default() };
        let mut runner = match budget {
            Some(_) => {
                config.cases = FUZZ_BATCH;
                TestRunner::new(config.clone())
            }
            None => {
                if std::env::var_os("PROPTEST_CASES").is_none() {
                    config.cases = cases;
                }
                TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(RngAlgorithm::ChaCha))
            }
        };
        match runner.run(&strategy, &property) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                panic!("{name}: property failed after {tried}+ cases: {reason}\nminimal failing input: {input:#?}")
            }
            Err(TestError::Abort(reason)) => panic!("{name}: gave up: {reason}"),
        }
        tried += u64::from(config.cases);
        match budget {
            Some(budget) if started.elapsed() < budget => continue,
            Some(_) => {
                eprintln!("{name}: {tried} cases in {:.1} s, no failure", started.elapsed().as_secs_f64());
                return;
            }
            None => return,
        }
    }
}

/// Fail the case with `message` unless `condition` holds (like
/// `prop_assert!`, usable from helper functions).
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}
