//! What one password check costs db_proxy, by the Argon2id settings the
//! stored hash was made with (`Argon2MemoryKiB`/`Argon2Passes`,
//! `--argon2-memory-kib`/`--argon2-passes`), and TeamTalk's salted MD5 for
//! comparison. A login whose password db_proxy's credential cache does
//! not know (the first after a restart, or 10 minutes after the last)
//! costs one such check on a login lane; docs/performance.md, "First
//! logins of Argon2 users", turns these into logins per second.
//!
//! Run with `cargo bench -p teamtalk-daemons --bench password`.

use daemons::password::{HashParams, StoredPassword, hash_password, md5_hex, teamtalk_salted};

fn main() {
    divan::main();
}

/// (memory KiB, passes): the default (OWASP's 19 MiB, 2 passes), OWASP's
/// 7 MiB with 5 passes (about the same cost), and cheaper ones.
const SETTINGS: [(u32, u32); 5] = [(19_456, 2), (7_168, 5), (9_216, 1), (4_096, 1), (1_024, 1)];

#[divan::bench(args = SETTINGS, sample_count = 20, sample_size = 2)]
fn argon2id_check(bencher: divan::Bencher<'_, '_>, (m, t): (u32, u32)) {
    let client = md5_hex(b"a password");
    let params = HashParams::new(m, t).expect("valid settings");
    let stored = StoredPassword::Argon2(hash_password(&params, &client).expect("hash"));
    bencher.bench(|| {
        assert!(stored.verify(divan::black_box(&client)).expect("verify"));
    });
}

#[divan::bench]
fn teamtalk_md5_check(bencher: divan::Bencher<'_, '_>) {
    let client = md5_hex(b"a password");
    let stored = StoredPassword::TeamTalk {
        hash: teamtalk_salted(&client, "4821"),
        salt: "4821".to_owned(),
    };
    bencher.bench(|| {
        assert!(stored.verify(divan::black_box(&client)).expect("verify"));
    });
}
