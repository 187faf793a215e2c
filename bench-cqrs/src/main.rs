//! cqrs-es's bank-account commands through `CqrsFramework`, on annal (annal-es, under
//! `FsyncPolicy::Always` and `Never`, rebuilding aggregates from their events or from a
//! snapshot taken with every commit), on postgres-es against a real PostgreSQL
//! (`synchronous_commit` on and off), and on cqrs-es's `MemStore`; with 1 and 16 tasks.
//!
//! `bash bench-cqrs/run.sh [--commands N] [--accounts A] [--runs R] [--only NAME,NAME]`
//! (`--only`: the configurations whose names contain one of these). The parent starts a
//! PostgreSQL server of its own (a temporary data directory, a loopback port, fsync on) and
//! runs each configuration in a child process of its own, interleaved over the rounds; it
//! prints the median commands per second of each and stops the server.
//!
//! The workload: `N` commands (default 3200) over `A` accounts (default 160), `N / A` each
//! (an opening, then deposits and withdrawals), the accounts split evenly between the
//! tasks, each task issuing its accounts' commands round robin. No query is attached: the
//! figures are the command path's (load the aggregate, handle, commit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../crates/annal-es/examples/bank_account.rs"]
mod demo;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{FsyncPolicy, Options, Store};
use cqrs_es::{CqrsFramework, EventStore};
use demo::{BankAccount, BankAccountCommand, BankAccountServices, HappyPathBankAccountServices};

/// The accounts the commands go to: `--accounts N`, 160 unless given (a larger number makes
/// a longer run of the same per-account shape).
fn accounts() -> usize {
    static ACCOUNTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ACCOUNTS.get_or_init(|| arg("--accounts").map_or(160, |v| v.parse().unwrap()))
}

/// The configurations: (name, tasks).
fn configurations() -> Vec<(&'static str, usize)> {
    let systems = [
        "annal Always, events",
        "annal Always, snapshots",
        "annal Never, events",
        "annal Never, snapshots",
        "postgres-es synchronous_commit=on",
        "postgres-es synchronous_commit=off",
        "MemStore",
    ];
    [1, 16]
        .into_iter()
        .flat_map(|tasks| systems.iter().map(move |s| (*s, tasks)))
        .collect()
}

fn services() -> BankAccountServices {
    BankAccountServices::new(Box::new(HappyPathBankAccountServices))
}

/// The commands of one task: its accounts' opening, then alternating deposits and
/// withdrawals, round robin over its accounts.
fn commands(task: usize, tasks: usize, total: usize) -> Vec<(String, BankAccountCommand)> {
    let mine: Vec<String> = (0..accounts())
        .filter(|a| a % tasks == task)
        .map(|a| format!("acct-{a}"))
        .collect();
    let per_account = total / accounts();
    let mut v = Vec::new();
    for round in 0..per_account {
        for account in &mine {
            let command = match round {
                0 => BankAccountCommand::OpenAccount {
                    account_id: account.clone(),
                },
                r if r % 2 == 1 => BankAccountCommand::DepositMoney { amount: 100.0 },
                _ => BankAccountCommand::WithdrawMoney {
                    amount: 50.0,
                    atm_id: "ATM-1".into(),
                },
            };
            v.push((account.clone(), command));
        }
    }
    v
}

/// Runs every task's commands on `cqrs`; returns commands per second.
async fn drive<ES>(cqrs: Arc<CqrsFramework<BankAccount, ES>>, tasks: usize, total: usize) -> f64
where
    ES: EventStore<BankAccount> + 'static,
    ES::AC: Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let cqrs = Arc::clone(&cqrs);
            tokio::spawn(async move {
                for (account, command) in commands(t, tasks, total) {
                    cqrs.execute(&account, command).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (total / accounts() * accounts()) as f64 / start.elapsed().as_secs_f64()
}

async fn child(system: &str, tasks: usize, total: usize, pg_url: Option<&str>) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let annal = |fsync| {
        Arc::new(
            Store::open(
                tmp.path(),
                Options {
                    fsync,
                    ..Options::default()
                },
            )
            .unwrap(),
        )
    };
    match system {
        "annal Always, events"
        | "annal Never, events"
        | "annal Always, snapshots"
        | "annal Never, snapshots" => {
            let fsync = if system.contains("Always") {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Never
            };
            let store = annal(fsync);
            let cqrs = if system.ends_with("snapshots") {
                annal_es::annal_aggregate_cqrs::<BankAccount>(
                    Arc::clone(&store),
                    vec![],
                    services(),
                )
            } else {
                annal_es::annal_cqrs::<BankAccount>(Arc::clone(&store), vec![], services())
            };
            let rate = drive(Arc::new(cqrs), tasks, total).await;
            let stats = store.stats().unwrap();
            eprintln!(
                "  {system}, {tasks} tasks: {} events, {} fdatasyncs",
                stats.events, stats.segment_syncs
            );
            rate
        }
        "MemStore" => {
            let store = cqrs_es::mem_store::MemStore::<BankAccount>::default();
            drive(
                Arc::new(CqrsFramework::new(store, vec![], services())),
                tasks,
                total,
            )
            .await
        }
        s if s.starts_with("postgres-es") => {
            let mut url = pg_url.expect("a PostgreSQL URL").to_string();
            if s.ends_with("off") {
                url.push_str("?options=-c%20synchronous_commit%3Doff");
            }
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(u32::try_from(tasks.max(2)).unwrap())
                .connect(&url)
                .await
                .unwrap();
            sqlx::query("TRUNCATE events, snapshots")
                .execute(&pool)
                .await
                .unwrap();
            let (setting,): (String,) =
                sqlx::query_as("SELECT current_setting('synchronous_commit')")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let want = if s.ends_with("off") { "off" } else { "on" };
            assert_eq!(setting, want, "the connection's synchronous_commit");
            let cqrs = postgres_es::postgres_cqrs::<BankAccount>(pool, vec![], services());
            drive(Arc::new(cqrs), tasks, total).await
        }
        other => panic!("unknown system {other}"),
    }
}

/// A PostgreSQL server of the benchmark's own, stopped on drop.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    server: Child,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    fn bin_dir() -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        found.retain(|p| p.join("initdb").exists());
        found.sort();
        found.pop().expect(
            "no PostgreSQL under /usr/lib/postgresql: run bench-cqrs/run.sh, which installs it",
        )
    }

    /// `program args`, as the `postgres` user when this process is root (the server
    /// refuses to run as root).
    fn command(bin: &Path, program: &str, as_postgres: bool) -> Command {
        if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        }
    }

    fn start() -> Postgres {
        let bin = Self::bin_dir();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
            // The temporary directory's parent must let the postgres user through.
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        }
        let init = Self::command(&bin, "initdb", as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "bench", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed");
        let port = free_port();
        let server = Self::command(&bin, "postgres", as_postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args([
                "-c",
                "fsync=on",
                "-c",
                "max_connections=64",
                "-c",
                "shared_buffers=256MB",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Postgres {
            _dir: dir,
            data,
            bin,
            server,
            port,
            as_postgres,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let schema = "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
             event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, sequence)); \
             CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";
        let created = Command::new(pg.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "bench",
                "-d",
                "postgres",
                "-q",
                "-c",
                schema,
            ])
            .status()
            .unwrap();
        assert!(created.success(), "creating the tables failed");
        pg
    }

    fn url(&self) -> String {
        format!("postgresql://bench@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = Self::command(&self.bin, "pg_ctl", self.as_postgres)
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "fast", "-s"])
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let total: usize = arg("--commands").map_or(3200, |v| v.parse().unwrap());
    if let Some(system) = arg("--child") {
        let tasks: usize = arg("--tasks").unwrap().parse().unwrap();
        let url = arg("--pg");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let rate = rt.block_on(child(&system, tasks, total, url.as_deref()));
        println!("{rate}");
        return;
    }
    let runs: usize = arg("--runs").map_or(3, |v| v.parse().unwrap());
    let only = arg("--only");
    let pg = Postgres::start();
    let exe = std::env::current_exe().unwrap();
    let configs: Vec<(&str, usize)> = configurations()
        .into_iter()
        .filter(|(s, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|o| s.contains(o)))
        })
        .collect();
    let mut rates: Vec<Vec<f64>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        eprintln!("round {} of {runs}", round + 1);
        for (i, (system, tasks)) in configs.iter().enumerate() {
            let out = Command::new(&exe)
                .args(["--child", system, "--tasks", &tasks.to_string()])
                .args(["--commands", &total.to_string(), "--pg", &pg.url()])
                .args(["--accounts", &accounts().to_string()])
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{system} with {tasks} tasks failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = stdout
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or_else(|| panic!("{system}: no rate in {stdout:?}"));
            rates[i].push(rate);
        }
    }
    drop(pg);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{total} bank-account commands over {} accounts, median of {runs} interleaved rounds (commands/s)\n",
        accounts()
    );
    println!("{:<40} {:>10} {:>10}", "", "1 task", "16 tasks");
    let mut table = std::collections::BTreeMap::<&str, [f64; 2]>::new();
    for ((system, tasks), r) in configs.iter().zip(&rates) {
        let col = usize::from(*tasks == 16);
        table.entry(system).or_default()[col] = median(r);
    }
    for (system, _) in configurations().iter().filter(|(_, t)| *t == 1) {
        if let Some([one, sixteen]) = table.get(system) {
            println!("{system:<40} {one:>10.0} {sixteen:>10.0}");
        }
    }
    let get = |s: &str, col: usize| table.get(s).map(|r| r[col]);
    if let (Some(a), Some(m)) = (get("annal Never, snapshots", 0), get("MemStore", 0)) {
        let b = get("annal Never, snapshots", 1)
            .zip(get("MemStore", 1))
            .map_or(f64::NAN, |(a, m)| a / m);
        println!(
            "\nannal Never with snapshots / MemStore: {:.2}x (1 task), {b:.2}x (16 tasks); target >= 0.8x",
            a / m
        );
    }
    if let (Some(a), Some(p)) = (
        get("annal Always, snapshots", 1),
        get("postgres-es synchronous_commit=on", 1),
    ) {
        let e = get("annal Always, events", 1).map_or(f64::NAN, |e| e / p);
        println!(
            "annal Always / postgres-es synchronous_commit=on, 16 tasks: {:.2}x with snapshots, {e:.2}x rebuilding from events; target >= 3x",
            a / p
        );
    }
}
