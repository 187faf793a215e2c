//! The layers, checked on the source: the engine names nothing above it, and the
//! event-sourcing layer does not name the facade. (`docs/design.md` draws them.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of code (comments and doc comments left out) under `root` that name one of
/// `names`, directly (`crate::es::x`) or in a grouped import (`use crate::{es::x, ...}`).
fn offenders_in(root: &Path, names: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // `crate::{a, es::b}` names `crate::es` too.
            let grouped = code.find("crate::{").map(|at| {
                let inner = &code[at + "crate::{".len()..];
                inner
                    .split([',', '{', '}', ' '])
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("crate::{p}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let hay = format!("{code} {}", grouped.unwrap_or_default());
            if names.iter().any(|name| hay.contains(name)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

fn offenders(dir: &str, names: &[&str]) -> Vec<String> {
    offenders_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), names)
}

/// What the engine must not name.
const ABOVE_ENGINE: [&str; 8] = [
    "crate::es",
    "crate::store",
    "crate::Store",
    "crate::Repository",
    "crate::Subscription",
    "super::es",
    "super::store",
    "super::super::es",
];

#[test]
fn the_engine_names_nothing_above_it() {
    let found = offenders("src/engine", &ABOVE_ENGINE);
    assert!(
        found.is_empty(),
        "the engine reaches up:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_event_sourcing_layer_does_not_name_the_facade() {
    let found = offenders("src/es", &["crate::store", "crate::Store", "super::store"]);
    assert!(found.is_empty(), "es reaches up:\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_every_way_of_reaching_up() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("direct.rs", "use crate::es::EsState;", true),
        (
            "grouped.rs",
            "use crate::{error::Error, es::EsState};",
            true,
        ),
        ("nested.rs", "use super::super::es::durable;", true),
        ("facade.rs", "fn f(_: &crate::Store) {}", true),
        ("comment.rs", "// crate::es is above us", false),
        (
            "fine.rs",
            "use crate::{error::Error, options::Options};",
            false,
        ),
    ];
    for (name, line, caught) in cases {
        let dir = tmp.path().join(name.trim_end_matches(".rs"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(name), format!("{line}\n")).unwrap();
        let found = offenders_in(&dir, &ABOVE_ENGINE);
        assert_eq!(!found.is_empty(), caught, "{line}: {found:?}");
    }
}
