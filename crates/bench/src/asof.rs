//! `as_of`: `Engine::status_at` at random event times of the stored log, through the library.

use crate::data::Rng;
use crate::report::percentile;
use crate::server::Fields;
use anyhow::Result;
use ivrstate_engine::Engine;
use ivrstate_model::Micros;
use ivrstate_store::StoreOptions;
use std::path::Path;
use std::time::Instant;

/// Opens the engine on the store in `dir` (which derives the history index the first time;
/// its duration is returned, not part of the scenario) and runs `runs` x `queries` queries.
pub fn run(
    dir: &Path,
    first: Micros,
    last: Micros,
    runs: usize,
    queries: usize,
) -> Result<(f64, Vec<Fields>)> {
    let t = Instant::now();
    let engine = Engine::open(dir, StoreOptions::default())?;
    let open_secs = t.elapsed().as_secs_f64();
    let span = (last.0 - first.0).max(1) as u64;
    let mut rng = Rng(11);
    let mut out = Vec::new();
    for _ in 0..runs {
        let mut samples = Vec::with_capacity(queries);
        for _ in 0..queries {
            let at = Micros(first.0 + rng.below(span) as i64);
            let t = Instant::now();
            let view = engine.status_at(at)?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(view);
        }
        out.push(vec![
            ("p50_ms", percentile(&samples, 50.0)),
            ("p99_ms", percentile(&samples, 99.0)),
        ]);
    }
    Ok((open_secs, out))
}
