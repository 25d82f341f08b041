//! The proptest configuration of the core's property tests: a fixed seed, so every run tries the
//! same cases and a failure seen anywhere reproduces with the same command. `PROPTEST_RNG_SEED=<u64>`
//! picks another seed to explore (`PROPTEST_RNG_SEED=$RANDOM`), `PROPTEST_CASES` the number of cases.
//! The seed goes to the test's output, which the harness shows on failure beside proptest's shrunk
//! input.

use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// The seed every run starts from unless `PROPTEST_RNG_SEED` names another.
pub const SEED: u64 = 0x0064_726f_7665_7239;

/// `cases` cases unless `PROPTEST_CASES` says otherwise, from [`SEED`] unless `PROPTEST_RNG_SEED`
/// holds a number.
pub fn config(cases: u32) -> Config {
    // `default` reads the PROPTEST_* variables (an unparsable seed leaves it random: not here).
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    // Failing cases are kept beside the test file (`<test>.proptest-regressions`), replayed first.
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    if !matches!(config.rng_seed, RngSeed::Fixed(_)) {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    eprintln!(
        "proptest: {} cases from seed {} (rerun with PROPTEST_RNG_SEED={})",
        config.cases, config.rng_seed, config.rng_seed
    );
    config
}
