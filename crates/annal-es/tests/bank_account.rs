//! cqrs-es's bank-account demo end to end on annal (`examples/bank_account.rs`): the view
//! the demo's `test_api.sh` reads after its four commands, and the same after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../examples/bank_account.rs"]
mod demo;

use std::sync::Arc;

use annal::{Options, Store};
use cqrs_es::persist::ViewRepository;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
    let view = demo::run(Arc::clone(&store), "ACCT-1").await;
    assert_eq!(view.account_id.as_deref(), Some("ACCT-1"));
    assert!((view.balance - 343.72).abs() < 1e-9, "{}", view.balance);
    assert_eq!(view.written_checks, ["1170"]);
    let ledger: Vec<(&str, f64)> = view
        .ledger
        .iter()
        .map(|e| (e.description.as_str(), e.amount))
        .collect();
    assert_eq!(
        ledger,
        [
            ("deposit", 1000.0),
            ("atm withdrawal", -400.0),
            ("1170", -256.28)
        ]
    );
    // Four account events, and four view updates.
    assert_eq!(store.stream_version("account-ACCT-1").unwrap(), Some(4));
    assert_eq!(
        store.stream_version("view~account_query-ACCT-1").unwrap(),
        Some(4)
    );
    let store = Arc::try_unwrap(store).unwrap();
    store.close().unwrap();

    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
    let (cqrs, views) = demo::cqrs_framework(Arc::clone(&store));
    let again = views.load("ACCT-1").await.unwrap().unwrap();
    assert_eq!(again, view);
    cqrs.execute(
        "ACCT-1",
        demo::BankAccountCommand::DepositMoney { amount: 56.28 },
    )
    .await
    .unwrap();
    let after = views.load("ACCT-1").await.unwrap().unwrap();
    assert!((after.balance - 400.0).abs() < 1e-9, "{}", after.balance);
}
