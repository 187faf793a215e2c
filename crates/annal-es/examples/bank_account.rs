//! cqrs-es's bank-account demo (the `demo` of the cqrs repository: an account aggregate with
//! services, a logging query and a view with a ledger) on annal instead of PostgreSQL,
//! without its HTTP layer: the commands its `test_api.sh` sends, then the view it reads.
//! The domain is the demo's; what changes is the wiring: `annal_cqrs` for `postgres_cqrs`,
//! `AnnalViewRepository` for `PostgresViewRepository`, a store directory for a pool.
//!
//! `cargo run -p annal-es --example bank_account [DIR]` (a temporary directory without one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The domain types are public for tests/bank_account.rs, which runs this demo; their fields are the demo's.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use annal::{Options, Store};
use annal_es::{AnnalCqrs, AnnalViewRepository, annal_cqrs};
use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{GenericQuery, ViewRepository};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, Query, View};
use serde::{Deserialize, Serialize};

/// The account aggregate.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    account_id: String,
    balance: f64,
}

/// What a client asks of an account.
#[derive(Debug, Deserialize)]
pub enum BankAccountCommand {
    /// Opens the account.
    OpenAccount { account_id: String },
    /// Adds money.
    DepositMoney { amount: f64 },
    /// Takes cash out at an ATM.
    WithdrawMoney { amount: f64, atm_id: String },
    /// Pays by check.
    WriteCheck { check_number: String, amount: f64 },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    /// The account was opened.
    AccountOpened { account_id: String },
    /// Money came in.
    CustomerDepositedMoney { amount: f64, balance: f64 },
    /// Cash went out at an ATM.
    CustomerWithdrewCash { amount: f64, balance: f64 },
    /// A check was written.
    CustomerWroteCheck {
        check_number: String,
        amount: f64,
        balance: f64,
    },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::AccountOpened { .. } => "AccountOpened",
            BankAccountEvent::CustomerDepositedMoney { .. } => "CustomerDepositedMoney",
            BankAccountEvent::CustomerWithdrewCash { .. } => "CustomerWithdrewCash",
            BankAccountEvent::CustomerWroteCheck { .. } => "CustomerWroteCheck",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// A refused command.
#[derive(Debug)]
pub struct BankAccountError(String);

impl std::fmt::Display for BankAccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for BankAccountError {}

impl From<&str> for BankAccountError {
    fn from(message: &str) -> Self {
        BankAccountError(message.to_string())
    }
}

/// The outside systems the account's rules consult.
#[async_trait]
pub trait BankAccountApi: Sync + Send {
    /// Whether the ATM allows the withdrawal.
    async fn atm_withdrawal(&self, atm_id: &str, amount: f64) -> Result<(), String>;
    /// Whether the check is valid.
    async fn validate_check(&self, account_id: &str, check_number: &str) -> Result<(), String>;
}

/// The services of the aggregate.
pub struct BankAccountServices {
    services: Box<dyn BankAccountApi>,
}

impl BankAccountServices {
    /// Services backed by `services`.
    pub fn new(services: Box<dyn BankAccountApi>) -> Self {
        BankAccountServices { services }
    }
}

impl std::fmt::Debug for BankAccountServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BankAccountServices")
    }
}

/// Services that allow everything.
#[derive(Debug)]
pub struct HappyPathBankAccountServices;

#[async_trait]
impl BankAccountApi for HappyPathBankAccountServices {
    async fn atm_withdrawal(&self, _atm_id: &str, _amount: f64) -> Result<(), String> {
        Ok(())
    }
    async fn validate_check(&self, _account_id: &str, _check_number: &str) -> Result<(), String> {
        Ok(())
    }
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = BankAccountServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BankAccountCommand::OpenAccount { account_id } => {
                sink.write(BankAccountEvent::AccountOpened { account_id }, self)
                    .await;
            }
            BankAccountCommand::DepositMoney { amount } => {
                let balance = self.balance + amount;
                sink.write(
                    BankAccountEvent::CustomerDepositedMoney { amount, balance },
                    self,
                )
                .await;
            }
            BankAccountCommand::WithdrawMoney { amount, atm_id } => {
                let balance = self.balance - amount;
                if balance < 0_f64 {
                    return Err("funds not available".into());
                }
                if services
                    .services
                    .atm_withdrawal(&atm_id, amount)
                    .await
                    .is_err()
                {
                    return Err("atm rule violation".into());
                }
                sink.write(
                    BankAccountEvent::CustomerWithdrewCash { amount, balance },
                    self,
                )
                .await;
            }
            BankAccountCommand::WriteCheck {
                check_number,
                amount,
            } => {
                let balance = self.balance - amount;
                if balance < 0_f64 {
                    return Err("funds not available".into());
                }
                if services
                    .services
                    .validate_check(&self.account_id, &check_number)
                    .await
                    .is_err()
                {
                    return Err("check invalid".into());
                }
                sink.write(
                    BankAccountEvent::CustomerWroteCheck {
                        check_number,
                        amount,
                        balance,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::AccountOpened { account_id } => self.account_id = account_id,
            BankAccountEvent::CustomerDepositedMoney { balance, .. }
            | BankAccountEvent::CustomerWithdrewCash { balance, .. }
            | BankAccountEvent::CustomerWroteCheck { balance, .. } => self.balance = balance,
        }
    }
}

/// Prints every event, as the demo's `SimpleLoggingQuery`.
struct SimpleLoggingQuery;

#[async_trait]
impl Query<BankAccount> for SimpleLoggingQuery {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<BankAccount>]) {
        for event in events {
            let payload = serde_json::to_string(&event.payload).unwrap_or_default();
            println!("{aggregate_id}-{}\n{payload}", event.sequence);
        }
    }
}

/// The account as clients see it: balance, checks written and a ledger.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BankAccountView {
    pub account_id: Option<String>,
    pub balance: f64,
    pub written_checks: Vec<String>,
    pub ledger: Vec<LedgerEntry>,
}

/// One line of the ledger.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LedgerEntry {
    pub description: String,
    pub amount: f64,
}

impl View<BankAccount> for BankAccountView {
    fn update(&mut self, event: &EventEnvelope<BankAccount>) {
        let mut entry = |description: &str, amount: f64| {
            self.ledger.push(LedgerEntry {
                description: description.to_string(),
                amount,
            })
        };
        match &event.payload {
            BankAccountEvent::AccountOpened { account_id } => {
                self.account_id = Some(account_id.clone());
            }
            BankAccountEvent::CustomerDepositedMoney { amount, balance } => {
                entry("deposit", *amount);
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWithdrewCash { amount, balance } => {
                entry("atm withdrawal", -amount);
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWroteCheck {
                check_number,
                amount,
                balance,
            } => {
                entry(check_number, -amount);
                self.written_checks.push(check_number.clone());
                self.balance = *balance;
            }
        }
    }
}

type AccountViews = AnnalViewRepository<BankAccountView, BankAccount>;

/// The demo's wiring (its `config.rs`), on annal.
pub fn cqrs_framework(store: Arc<Store>) -> (Arc<AnnalCqrs<BankAccount>>, Arc<AccountViews>) {
    let account_view_repo = Arc::new(AccountViews::new("account_query", Arc::clone(&store)));
    let mut account_query = GenericQuery::new(Arc::clone(&account_view_repo));
    account_query.use_error_handler(Box::new(|e| eprintln!("{e}")));
    let queries: Vec<Box<dyn Query<BankAccount>>> =
        vec![Box::new(SimpleLoggingQuery), Box::new(account_query)];
    let services = BankAccountServices::new(Box::new(HappyPathBankAccountServices));
    (
        Arc::new(annal_cqrs(store, queries, services)),
        account_view_repo,
    )
}

/// What `test_api.sh` does over HTTP: open, deposit 1000, withdraw 400 at an ATM, write
/// check 1170 for 256.28, then read the account's view.
pub async fn run(store: Arc<Store>, account_id: &str) -> BankAccountView {
    let (cqrs, views) = cqrs_framework(store);
    let metadata = |uri: &str| {
        HashMap::from([
            ("time".to_string(), "2026-12-01T00:00:00Z".to_string()),
            ("uri".to_string(), uri.to_string()),
            ("User-Agent".to_string(), "bank_account example".to_string()),
        ])
    };
    let commands = [
        format!(r#"{{"OpenAccount": {{"account_id": "{account_id}"}}}}"#),
        r#"{"DepositMoney": {"amount": 1000.0}}"#.to_string(),
        r#"{"WithdrawMoney": {"amount": 400.0, "atm_id": "ATM-N468290"}}"#.to_string(),
        r#"{"WriteCheck": {"check_number": "1170", "amount": 256.28}}"#.to_string(),
    ];
    for body in commands {
        let command: BankAccountCommand = serde_json::from_str(&body).unwrap();
        cqrs.execute_with_metadata(
            account_id,
            command,
            metadata(&format!("/account/{account_id}")),
        )
        .await
        .unwrap();
    }
    // A withdrawal the balance does not cover: refused, nothing recorded.
    let refused = cqrs
        .execute(
            account_id,
            BankAccountCommand::WithdrawMoney {
                amount: 10_000.0,
                atm_id: "ATM-N468290".into(),
            },
        )
        .await;
    assert!(refused.is_err());
    views.load(account_id).await.unwrap().unwrap()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let store = Arc::new(Store::open(&dir, Options::default())?);
    let view = run(Arc::clone(&store), "ACCT-7d2f").await;
    println!("{}", serde_json::to_string_pretty(&view)?);
    println!("events in {}: {}", dir.display(), store.stats()?.events);
    Ok(())
}
