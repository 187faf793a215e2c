//! The consistency model's costs (see `shared/query_costs.rs`): `cargo bench --bench query` (`--
//! quick` for a smaller run, `-- only append|read|replay` for one part).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "a benchmark stops at its first failure, and its sizes are small"
)]

#[path = "shared/workload.rs"]
mod workload;

#[path = "shared/query_costs.rs"]
mod query_costs;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "only")
        .and_then(|i| args.get(i + 1).cloned());
    println!(
        "annal query benchmark ({} run)",
        if quick { "quick" } else { "full" }
    );
    query_costs::run(if quick { 1 } else { 5 }, |part| {
        only.as_deref().is_none_or(|o| o == part)
    });
}
