//! The README's Rust examples are whole programs a reader can paste: no rustdoc hidden lines,
//! each with its `main`. (`src/lib.rs` compiles and runs them as doctests.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic"
)]

/// The bodies of the README's ```rust blocks.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_readme_example_is_a_whole_program_with_nothing_hidden() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    assert!(blocks.len() >= 4, "found {} blocks", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let hidden: Vec<&str> = block
            .lines()
            .filter(|l| l.trim_start() == "#" || l.trim_start().starts_with("# "))
            .collect();
        assert!(hidden.is_empty(), "block {i} hides lines: {hidden:?}");
        assert!(
            block.contains("fn main()"),
            "block {i} has no main:\n{block}"
        );
    }
}

#[test]
fn the_scan_finds_hidden_lines() {
    let blocks =
        rust_blocks("text\n```rust\n# fn main() {}\nlet x = 1;\n```\n```sh\n# not rust\n```\n");
    assert_eq!(blocks, ["# fn main() {}\nlet x = 1;\n"]);
}
