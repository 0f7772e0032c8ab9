//! The crate's documentation says what it promises: its front page leads with the helper crate
//! that holds `run_transaction`, and a link written as a path goes to that path. (`cargo doc`
//! itself, with `RUSTDOCFLAGS=-Dwarnings`, checks that every link resolves; not that it
//! resolves to what its text names.)

use std::path::{Path, PathBuf};

/// The app crate's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The crate documentation of `src/lib.rs`: its `//!` lines, without the marker.
fn front_page() -> Vec<String> {
    std::fs::read_to_string(root().join("src/lib.rs"))
        .expect("read src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line).to_string())
        .collect()
}

/// A reader who opens the app's docs looking for `run_transaction` is sent to the helper crate
/// at once: the first paragraph after the title links `diesel_retry`, and the first example,
/// before anything about the app's own layers, runs `run_transaction` on a plain r2d2 pool.
#[test]
fn the_front_page_leads_with_the_helper_crate_and_a_plain_pool_example() {
    let page = front_page();
    let first_paragraph: String = page
        .iter()
        .skip(1)
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        first_paragraph.contains("[`diesel_retry`]") && first_paragraph.contains("run_transaction"),
        "the first paragraph does not send the reader to the helper: {first_paragraph:?}"
    );
    let first_example: Vec<&str> = page
        .iter()
        .skip_while(|line| !line.starts_with("```"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .map(String::as_str)
        .collect();
    let example = first_example.join("\n");
    for wanted in [
        "use diesel::r2d2::{ConnectionManager, Pool};",
        "run_transaction(",
    ] {
        assert!(
            example.contains(wanted),
            "no {wanted:?} in the first example:\n{example}"
        );
    }
    assert!(
        !example.contains("roachbank::"),
        "the first example needs nothing of roachbank's:\n{example}"
    );
    let layers = page
        .iter()
        .position(|line| line.starts_with("* [`workload`]"))
        .expect("the list of layers");
    let example_at = page
        .iter()
        .position(|line| line.starts_with("```"))
        .expect("an example");
    assert!(example_at < layers, "the helper's example comes first");
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// The last segment of a Rust path as a doc link writes it: `crate::db::Database::open` →
/// `open`, `mod@transfer` → `transfer`, `Self::run()` → `run`.
fn last_segment(path: &str) -> &str {
    let path = path.rsplit('@').next().unwrap_or(path);
    let path = path.trim_end_matches("()").trim_end_matches('!');
    path.rsplit("::").next().unwrap_or(path)
}

/// A doc link whose text is a path (`[`Database::open`](…)`) goes to that item: its explicit
/// target ends in the same name (a link to `Database::open` once went to the `migrate` module).
#[test]
fn doc_links_written_as_paths_go_to_the_item_they_name() {
    let mut wrong = Vec::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (number, line) in text.lines().enumerate() {
            let Some((_, doc)) = line.split_once("//") else {
                continue;
            };
            for piece in doc.split("[`").skip(1) {
                let Some((label, rest)) = piece.split_once("`](") else {
                    continue;
                };
                let Some((target, _)) = rest.split_once(')') else {
                    continue;
                };
                let is_path =
                    |text: &str| !text.contains(['/', '.', '#', ' ']) && text.contains("::");
                if is_path(label)
                    && !target.contains(['/', '#', ' '])
                    && last_segment(label) != last_segment(target)
                {
                    wrong.push(format!(
                        "{}:{}: [`{label}`]({target})",
                        file.strip_prefix(root()).unwrap_or(&file).display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "links that go elsewhere than they say:\n{}",
        wrong.join("\n")
    );
}
