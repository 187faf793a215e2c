//! `annal demo`: the cart example end to end on a fresh store, with the time each step took.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annal::{ExecuteError, FsyncPolicy, Options, ReadOptions, Store};
use serde_json::{Value, json};

use crate::cart::{CartActivity, CartCommand, carts};
use crate::common::{CliResult, Fail, check_store_dir, fsync_name, human_duration, thousands};
use crate::output::{Out, preview};

/// What the demo prints: lines of text, each after the time its step took in a column of
/// its own on the left (where a column stays straight whatever the text's length), or
/// (`--json`) one JSON object per line with the same facts.
struct Report {
    out: Out,
    json: bool,
}

impl Report {
    /// A section heading (text only: in JSON every line carries its step).
    fn heading(&mut self, text: &str) -> CliResult {
        if self.json {
            return Ok(());
        }
        self.out.line("")?;
        self.out.line(text)?;
        self.out.flush()
    }

    /// One fact of step `step`: `text` for people, `fields` for `--json`, and how long it
    /// took if it was timed.
    fn fact(&mut self, step: &str, text: &str, took: Option<Duration>, fields: Value) -> CliResult {
        if self.json {
            let mut object = json!({ "step": step });
            if let (Some(o), Value::Object(f)) = (object.as_object_mut(), fields) {
                o.extend(f);
                if let Some(t) = took {
                    o.insert("micros".into(), json!(t.as_micros()));
                }
            }
            self.out.json(&object)?;
        } else {
            let time = took.map(human_duration).unwrap_or_default();
            self.out.line(&format!("{time:>9}  {text}"))?;
        }
        self.out.flush()
    }
}

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

/// `annal demo`: in `dir` if given (it must not hold a store yet), else in a temporary
/// directory, removed at the end unless `keep`.
pub fn demo(dir: Option<&Path>, fsync: FsyncPolicy, keep: bool, json: bool) -> CliResult {
    let options = Options {
        fsync,
        ..Options::default()
    };
    let mut tmp = None;
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
            let t = tempfile::Builder::new()
                .prefix("annal-demo-")
                .tempdir()
                .map_err(|e| Fail::io("cannot create a temporary directory", e))?;
            let path = t.path().to_path_buf();
            tmp = Some(t);
            path
        }
    };
    let kept = keep || tmp.is_none();
    let all = Instant::now();
    let mut r = Report {
        out: Out::new(),
        json,
    };
    let where_ = if kept {
        dir.display().to_string()
    } else {
        format!(
            "{} (removed at the end: --keep or --dir DIR keeps it)",
            dir.display()
        )
    };
    r.fact(
        "start",
        &format!("annal demo: a shopping cart, in {where_}"),
        None,
        json!({ "dir": dir, "kept": kept }),
    )?;

    let (store, took) = timed(|| Store::open(&dir, options.clone()));
    let store = store?;
    let policy = fsync_name(fsync);
    r.heading("1. a new store")?;
    r.fact(
        "open",
        &format!("opened (fsync {policy})"),
        Some(took),
        json!({ "fsync": policy }),
    )?;

    r.heading("2. commands, checked against each cart's state")?;
    let repo = carts(&store);
    for (stream, command) in script() {
        let what = command.to_string();
        let (result, took) = timed(|| repo.execute(stream, command));
        match result {
            Ok(done) => {
                let types: Vec<&str> = done
                    .events
                    .iter()
                    .map(<crate::cart::Cart as annal::Aggregate>::event_type)
                    .collect();
                r.fact(
                    "command",
                    &format!(
                        "ok       {stream:8} {what:32} -> {}, version {}",
                        types.join(", "),
                        done.version
                    ),
                    Some(took),
                    json!({ "stream": stream, "command": what, "outcome": "ok",
                            "events": types, "version": done.version }),
                )?;
            }
            Err(ExecuteError::Domain(why)) => r.fact(
                "command",
                &format!("refused  {stream:8} {what:32} -> {why}"),
                Some(took),
                json!({ "stream": stream, "command": what, "outcome": "refused",
                        "reason": why.to_string() }),
            )?,
            Err(ExecuteError::Store(e)) => return Err(e.into()),
        }
    }

    let busy = "cart-7";
    let (result, took) = timed(|| -> CliResult<u64> {
        let customer = "hedy".to_string();
        let mut version = repo
            .execute(busy, CartCommand::Create { customer })
            .map_err(|e| Fail::msg(e.to_string()))?
            .version;
        for i in 1..BUSY_CART_EVENTS {
            let sku = format!("sku-{}", i % 10);
            version = repo
                .execute(busy, CartCommand::AddItem { sku, qty: 1 })
                .map_err(|e| Fail::msg(e.to_string()))?
                .version;
        }
        Ok(version)
    });
    let version = result?;
    let every = store.options().snapshot_every;
    r.heading(&format!(
        "3. a busy cart (a snapshot is saved every {every} events)"
    ))?;
    r.fact(
        "busy-cart",
        &format!(
            "{busy} took {} commands, now at version {} ({}/command)",
            thousands(u64::from(BUSY_CART_EVENTS)),
            thousands(version),
            human_duration(took / BUSY_CART_EVENTS),
        ),
        Some(took),
        json!({ "stream": busy, "commands": BUSY_CART_EVENTS, "version": version,
                "snapshot_every": every }),
    )?;

    r.heading("4. the history of cart-42, as stored (JSON: `annal read cart-42` shows it too)")?;
    for e in store.read_stream("cart-42", ReadOptions::forward())? {
        let e = e?;
        let data = String::from_utf8_lossy(&e.payload).into_owned();
        r.fact(
            "history",
            &format!(
                "version {}  position {:>4}  {:<21} {}",
                e.version,
                e.position,
                e.event_type,
                preview(&e.payload)
            ),
            None,
            json!({ "stream": "cart-42", "version": e.version, "position": e.position,
                    "type": e.event_type, "data": data }),
        )?;
    }

    let (caught_up, took) = timed(|| -> CliResult<(u64, CartActivity)> {
        let mut activity = store.projection::<CartActivity>()?;
        let applied = activity.catch_up()?;
        // Saved now, so that the reopened store resumes from it.
        activity.checkpoint()?;
        Ok((applied, activity.state().clone()))
    });
    let (applied, a) = caught_up?;
    let removed: Vec<String> = a.removed.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    r.heading("5. a projection over the whole log")?;
    r.fact(
        "projection",
        &format!(
            "cart-activity applied {} events: {} carts, {} shipped; {} items added \
             ({} pieces), {} taken out again ({})",
            thousands(applied),
            a.carts,
            a.shipped,
            thousands(a.items_added),
            thousands(a.pieces_added),
            a.removed.values().sum::<u32>(),
            removed.join(", ")
        ),
        Some(took),
        json!({ "events": applied, "carts": a.carts, "shipped": a.shipped,
                "items_added": a.items_added, "pieces_added": a.pieces_added,
                "removed": a.removed }),
    )?;

    drop(repo);
    store.close()?;
    let (store, took) = timed(|| Store::open(&dir, options.clone()));
    let store = store?;
    r.heading("6. closed and reopened")?;
    r.fact("reopen", "reopened the store", Some(took), json!({}))?;
    let repo = carts(&store);
    let (loaded, took) = timed(|| repo.load(busy));
    let loaded = loaded?;
    let from = |snapshot: Option<u64>| match snapshot {
        Some(v) => format!("from the snapshot at version {v}"),
        None => "with no snapshot".to_string(),
    };
    r.fact(
        "load",
        &format!(
            "{busy} loaded at version {} {}, replayed {} events",
            loaded.version,
            from(loaded.snapshot_version),
            loaded.replayed
        ),
        Some(took),
        json!({ "stream": busy, "version": loaded.version,
                "snapshot_version": loaded.snapshot_version, "replayed": loaded.replayed }),
    )?;
    let (past, took) = timed(|| repo.load_at(busy, 1_500));
    let past = past?;
    r.fact(
        "load-at",
        &format!(
            "{busy} as of version {} {}, replayed {} events",
            past.version,
            from(past.snapshot_version),
            past.replayed
        ),
        Some(took),
        json!({ "stream": busy, "version": past.version,
                "snapshot_version": past.snapshot_version, "replayed": past.replayed }),
    )?;
    let activity = store.projection::<CartActivity>()?;
    r.fact(
        "projection-resumed",
        &format!(
            "projection cart-activity resumed from its checkpoint: {} (at position {})",
            activity.resumed(),
            activity.position()
        ),
        None,
        json!({ "resumed": activity.resumed(), "position": activity.position() }),
    )?;
    drop(activity);
    drop(repo);
    store.close()?;
    let done = all.elapsed();
    if kept {
        if let Some(t) = tmp.take() {
            // `--keep`: the directory outlives this process.
            let _ = t.keep();
        }
        r.heading(&format!(
            "The store is in {0}: try `annal --dir {0} read cart-42`",
            dir.display()
        ))?;
    }
    r.fact(
        "done",
        "all done",
        Some(done),
        json!({ "dir": dir, "kept": kept }),
    )
}
