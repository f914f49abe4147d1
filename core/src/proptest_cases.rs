//! The case count of every property test in this crate: each property's own bounded default,
//! unless `PROPTEST_CASES` asks for another count (a longer run), and no regression files in
//! the source tree (a failing case is kept as a named test instead).

use proptest::test_runner::Config;

/// `cases` unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config(cases: u32) -> Config {
    // proptest's own default, in force unless `PROPTEST_CASES` sets another count (the core
    // reads no environment, so the count proptest settled on tells).
    const PROPTEST_DEFAULT_CASES: u32 = 256;
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if config.cases == PROPTEST_DEFAULT_CASES {
        config.cases = cases;
    }
    config
}
