//! The crash simulation (tests/sim) with every random choice taken from the fuzzer's input:
//! workloads, crash outcomes, injected failures and rot that coverage guidance steers.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/sim/mod.rs"]
mod sim;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = sim::run(sim::Rng::from_bytes(data)) {
        panic!("simulation failed: {e}");
    }
});
