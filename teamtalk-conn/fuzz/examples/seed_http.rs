//! Regenerates the `http_steps` seed corpus: decodes pseudo-random byte
//! strings into step sequences and keeps, for each way a run can end
//! (close reason and responses served), a couple that reach a request.
//! Rerun after changing `HttpStep`, whose byte decoding then changes:
//! `cargo run --release --example seed_http` (from teamtalk-conn/fuzz).

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use teamtalk_conn::fuzzing::{HttpStep, run_http};

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/http_steps");
    std::fs::create_dir_all(&dir)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kept: HashMap<String, usize> = HashMap::new();
    let mut best = 0;
    for i in 0..400_000u32 {
        let len = 32 + (i % 2048) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift64: deterministic, so reruns give the same corpus.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let Ok(steps) = Vec::<HttpStep>::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        let run = run_http(&steps);
        let label = run.closed.map_or("open", |c| c.label());
        let key = format!("{label}_{}", run.responses.min(2));
        let n = kept.entry(key.clone()).or_default();
        if (run.requests >= 1 && *n < 2) || run.responses > best {
            *n += 1;
            best = best.max(run.responses);
            std::fs::write(dir.join(format!("{key}_req{}_{i}", run.requests)), &data)?;
        }
    }
    println!("kept {} seeds", kept.values().sum::<usize>());
    Ok(())
}
