//! `annal demo`: the cart example end to end on a fresh store, with the time each step took.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annal::{ExecuteError, FsyncPolicy, Options, ReadOptions, Store};

use crate::cart::{Cart, CartActivity, CartCommand};
use crate::common::{CliResult, Fail, check_store_dir, fsync_name, human_duration, thousands};
use crate::output::Out;

/// Runs `f` and says how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// Events in the busy cart: past two snapshots (taken every 1000 events by default), so a
/// load after a restart starts from version 2000 and replays 50.
const BUSY_CART_EVENTS: u32 = 2_050;

/// The scripted commands: (cart, command). Some are refused by the cart.
fn script() -> Vec<(&'static str, CartCommand)> {
    use CartCommand::*;
    let s = |x: &str| x.to_string();
    vec![
        ("cart-42", Create { customer: s("ada") }),
        (
            "cart-42",
            AddItem {
                sku: s("tea"),
                qty: 2,
            },
        ),
        (
            "cart-42",
            AddItem {
                sku: s("mug"),
                qty: 1,
            },
        ),
        ("cart-42", RemoveItem { sku: s("tea") }),
        ("cart-42", RemoveItem { sku: s("cake") }),
        (
            "cart-42",
            Ship {
                address: s("1 Analytical Engine Way"),
            },
        ),
        (
            "cart-42",
            AddItem {
                sku: s("spoon"),
                qty: 1,
            },
        ),
        (
            "cart-13",
            Create {
                customer: s("grace"),
            },
        ),
        (
            "cart-13",
            AddItem {
                sku: s("scone"),
                qty: 3,
            },
        ),
        ("cart-13", RemoveItem { sku: s("scone") }),
        (
            "cart-13",
            Ship {
                address: s("7 Harvard Mark Road"),
            },
        ),
        (
            "cart-99",
            AddItem {
                sku: s("tea"),
                qty: 1,
            },
        ),
    ]
}

/// `annal demo`: in `dir` if given (it must not hold a store yet), else in a temporary one.
pub fn demo(dir: Option<&Path>, fsync: FsyncPolicy) -> CliResult {
    let options = Options {
        fsync,
        ..Options::default()
    };
    let tmp;
    let dir: PathBuf = match dir {
        Some(d) => {
            if check_store_dir(d).is_ok() {
                return Err(Fail::msg(format!(
                    "demo needs a fresh directory: {} already holds a store",
                    d.display()
                )));
            }
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("annal-demo-")
                .tempdir()
                .map_err(|e| Fail::io("cannot create a temporary directory", e))?;
            tmp.path().to_path_buf()
        }
    };
    let all = Instant::now();
    let mut out = Out::new();
    let say = |out: &mut Out, line: String| -> CliResult {
        out.line(&line)?;
        out.flush()
    };
    say(
        &mut out,
        format!("annal demo: a shopping cart, in {}", dir.display()),
    )?;

    let (store, took) = timed(|| Store::open(&dir, options.clone()));
    let store = store?;
    let policy = fsync_name(fsync);
    say(
        &mut out,
        format!(
            "\n1. opened a new store (fsync {policy})   {}",
            human_duration(took)
        ),
    )?;

    say(
        &mut out,
        "\n2. commands, checked against each cart's state".into(),
    )?;
    let carts = store.aggregate::<Cart>();
    for (stream, command) in script() {
        let what = command.to_string();
        let (result, took) = timed(|| carts.execute(stream, command));
        let line = match result {
            Ok(done) => {
                let types: Vec<&str> = done
                    .events
                    .iter()
                    .map(<Cart as annal::Aggregate>::event_type)
                    .collect();
                format!(
                    "   ok       {stream:8} {what:32} -> {}, version {}   {}",
                    types.join(", "),
                    done.version,
                    human_duration(took)
                )
            }
            Err(ExecuteError::Domain(why)) => {
                format!("   refused  {stream:8} {what:32} -> {why}")
            }
            Err(ExecuteError::Store(e)) => return Err(e.into()),
        };
        say(&mut out, line)?;
    }

    let busy = "cart-7";
    let (result, took) = timed(|| -> CliResult<u64> {
        let customer = "hedy".to_string();
        let mut version = carts
            .execute(busy, CartCommand::Create { customer })
            .map_err(|e| Fail::msg(e.to_string()))?
            .version;
        for i in 1..BUSY_CART_EVENTS {
            let sku = format!("sku-{}", i % 10);
            version = carts
                .execute(busy, CartCommand::AddItem { sku, qty: 1 })
                .map_err(|e| Fail::msg(e.to_string()))?
                .version;
        }
        Ok(version)
    });
    let version = result?;
    say(
        &mut out,
        format!(
            "\n3. a busy cart: {busy} took {} commands, now at version {}   {} ({}/command)\n   \
             (a snapshot is saved every {} events: at versions 1000 and 2000)",
            thousands(u64::from(BUSY_CART_EVENTS)),
            thousands(version),
            human_duration(took),
            human_duration(took / BUSY_CART_EVENTS),
            store.options().snapshot_every
        ),
    )?;

    say(&mut out, "\n4. the history of cart-42, as stored".into())?;
    for e in store.read_stream("cart-42", ReadOptions::forward())? {
        let e = e?;
        say(
            &mut out,
            format!(
                "   version {}  position {:>4}  {}",
                e.version, e.position, e.event_type
            ),
        )?;
    }

    let (caught_up, took) = timed(|| -> CliResult<(u64, String)> {
        let mut activity = store.projection::<CartActivity>()?;
        let applied = activity.catch_up()?;
        let a = activity.state();
        let removed: Vec<String> = a.removed.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        let summary = format!(
            "{} carts, {} shipped, {} items added; taken out again: {}",
            a.carts,
            a.shipped,
            thousands(a.items_added),
            removed.join(", ")
        );
        Ok((applied, summary))
    });
    let (applied, summary) = caught_up?;
    say(
        &mut out,
        format!(
            "\n5. projection cart-activity over the whole log: {} events   {}\n   {summary}",
            thousands(applied),
            human_duration(took)
        ),
    )?;

    drop(carts);
    store.close()?;
    let (store, took) = timed(|| Store::open(&dir, options.clone()));
    let store = store?;
    say(
        &mut out,
        format!(
            "\n6. closed and reopened the store   {}",
            human_duration(took)
        ),
    )?;
    let carts = store.aggregate::<Cart>();
    let (loaded, took) = timed(|| carts.load(busy));
    let loaded = loaded?;
    let from = |snapshot: Option<u64>| match snapshot {
        Some(v) => format!("from the snapshot at version {v}"),
        None => "with no snapshot".to_string(),
    };
    say(
        &mut out,
        format!(
            "   {busy} loaded at version {} {}, replayed {} events   {}",
            loaded.version,
            from(loaded.snapshot_version),
            loaded.replayed,
            human_duration(took)
        ),
    )?;
    let (past, took) = timed(|| carts.load_at(busy, 1_500));
    let past = past?;
    say(
        &mut out,
        format!(
            "   {busy} as of version {} {}, replayed {} events   {}",
            past.version,
            from(past.snapshot_version),
            past.replayed,
            human_duration(took)
        ),
    )?;
    let activity = store.projection::<CartActivity>()?;
    say(
        &mut out,
        format!(
            "   projection cart-activity resumed from its checkpoint: {} (at position {})",
            activity.resumed(),
            activity.position()
        ),
    )?;
    drop(activity);
    drop(carts);
    store.close()?;
    say(
        &mut out,
        format!("\ndone in {}", human_duration(all.elapsed())),
    )
}
