//! The layers, checked on the source: the engine names nothing above it, and the
//! event-sourcing layer does not name the facade. (`docs/design.md` draws them.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test's failure is a panic"
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

/// Lines of code (comments and doc comments left out) in `dir` that contain one of `names`.
fn offenders(dir: &str, names: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if names.iter().any(|name| code.contains(name)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_engine_names_nothing_above_it() {
    let above = [
        "crate::es",
        "crate::store",
        "crate::Store",
        "crate::Repository",
        "crate::Subscription",
        "super::es",
        "super::store",
    ];
    let found = offenders("src/engine", &above);
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
fn the_check_sees_a_violation() {
    // The scanner itself: the facade does name both layers.
    assert!(!offenders("src", &["crate::es::EsState"]).is_empty());
}
