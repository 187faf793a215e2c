//! Deterministic crash simulation: random workloads on a simulated disk that crashes, fails and
//! rots, checked after every recovery against a model of what was acknowledged (see
//! `tests/sim/mod.rs`).
//!
//! `ANNAL_SIM_SEEDS=N` runs N seeds (default 3000, about a minute in a debug build);
//! `ANNAL_SIM_SEED=S` replays one, `ANNAL_SIM_TRACE=1` prints its steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod sim;

#[test]
fn crash_simulation() {
    let seeds: Vec<u64> = match std::env::var("ANNAL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("ANNAL_SIM_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("ANNAL_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3000u64);
            (0..n).collect()
        }
    };
    let mut failures = vec![];
    for &seed in &seeds {
        if let Err(e) = sim::run(sim::Rng::seeded(seed)) {
            eprintln!(
                "seed {seed} failed: {e}\n  replay: ANNAL_SIM_SEED={seed} cargo test --release --test simulation"
            );
            failures.push(seed);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed: {failures:?}",
        failures.len(),
        seeds.len()
    );
    eprintln!("{} seeds ran clean", seeds.len());
}
