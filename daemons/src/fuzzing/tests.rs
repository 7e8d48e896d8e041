//! The fuzz runners under proptest: random bytes, a few hundred runs each,
//! so `cargo test` exercises the same harness the fuzz targets do.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{DbProxyFuzz, run_login_app, run_msg_app, run_route_app};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..2048)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn msg_app_keeps_its_invariants(data in bytes()) {
        run_msg_app(&data);
    }

    #[test]
    fn route_app_keeps_its_invariants(data in bytes()) {
        run_route_app(&data);
    }

    #[test]
    fn login_app_keeps_its_invariants(data in bytes()) {
        run_login_app(&data);
    }
}

#[test]
fn db_proxy_keeps_its_invariants() {
    // In memory, for speed; the fuzz target and the corpus replay use a
    // store on disk.
    let fuzz = DbProxyFuzz::in_memory().expect("store");
    let mut runner = TestRunner::new(Config::with_cases(128));
    runner
        .run(&bytes(), |data| {
            fuzz.run(&data);
            Ok(())
        })
        .unwrap();
}
