//! The map matches the territory (as rust-analyzer's `tidy` tests do): ARCHITECTURE.md's code
//! map names every workspace crate, each with the path, package and dependencies it really has,
//! every test its guarantee tables cite exists, and nothing cites a document outside the
//! repository. Fails with a list of what to fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    ivrstate_tests::repo_root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "fixtures" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["crates", "migrations", "tests", "fuzz"] {
        rust_files(&root().join(dir), &mut files);
    }
    files
}

/// The rows of every markdown table whose header has a cell equal to `header`, as cells.
fn table_rows(markdown: &str, header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in markdown.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells.iter().any(|c| c == header) {
            in_table = true;
            continue;
        }
        if in_table
            && !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            rows.push(cells);
        }
    }
    rows
}

/// The `code spans` of a markdown cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

struct Manifest {
    package: String,
    deps: BTreeSet<String>,
    opts_into_lints: bool,
}

fn manifest(dir: &Path) -> Manifest {
    let text = read(&dir.join("Cargo.toml"));
    let value: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let package = value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned();
    let deps = value
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().map(|k| k.replace('_', "-")).collect())
        .unwrap_or_default();
    let opts_into_lints = value
        .get("lints")
        .and_then(|l| l.get("workspace"))
        .and_then(|w| w.as_bool())
        .unwrap_or(false);
    Manifest {
        package,
        deps,
        opts_into_lints,
    }
}

fn workspace_members() -> Vec<String> {
    let value: toml::Table = read(&root().join("Cargo.toml")).parse().unwrap();
    value["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// The short name the code map uses for a workspace package: `ivrstate-store` is `store`,
/// the binary's package `ivrstate` is `cli`.
fn short_name(package: &str) -> String {
    match package.strip_prefix("ivrstate-") {
        Some(short) => short.to_owned(),
        None => "cli".to_owned(),
    }
}

#[test]
fn the_code_map_names_every_crate_with_its_real_dependencies() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let rows = table_rows(&architecture, "depends on");
    let members = workspace_members();
    let manifests: Vec<(String, Manifest)> = members
        .iter()
        .map(|m| (m.clone(), manifest(&root().join(m))))
        .collect();
    let shorts: BTreeSet<String> = manifests
        .iter()
        .map(|(_, m)| short_name(&m.package))
        .collect();
    let mut problems = Vec::new();
    let mut mapped = BTreeSet::new();

    for row in &rows {
        let spans = code_spans(&row[0]);
        let Some(path) = spans.first() else { continue };
        let path = path.trim_end_matches('/');
        if !root().join(path).exists() {
            problems.push(format!("code map: `{path}` does not exist"));
            continue;
        }
        let Some((_, manifest)) = manifests.iter().find(|(m, _)| m == path) else {
            // Outside the workspace (fuzz/ is a workspace of its own): only its existence counts.
            continue;
        };
        mapped.insert(path.to_owned());
        if let Some(package) = spans.get(1) {
            if *package != manifest.package {
                problems.push(format!(
                    "code map: `{path}` is package `{}`, not `{package}`",
                    manifest.package
                ));
            }
        }
        let stated: Vec<String> = row
            .last()
            .map(|cell| {
                cell.split(',')
                    .filter_map(|item| item.split_whitespace().next())
                    .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-'))
                    .filter(|w| !w.is_empty())
                    .map(|w| w.replace('_', "-"))
                    .collect()
            })
            .unwrap_or_default();
        let mut stated_internal = BTreeSet::new();
        for dep in &stated {
            if shorts.contains(dep) {
                let package = if dep == "cli" {
                    "ivrstate".to_owned()
                } else {
                    format!("ivrstate-{dep}")
                };
                if !manifest.deps.contains(&package) {
                    problems.push(format!(
                        "code map: `{path}` says it depends on {dep}, its Cargo.toml does not"
                    ));
                }
                stated_internal.insert(package);
            } else if !manifest.deps.contains(dep) {
                problems.push(format!(
                    "code map: `{path}` says it depends on {dep}, its Cargo.toml does not"
                ));
            }
        }
        for dep in manifest.deps.iter().filter(|d| d.starts_with("ivrstate")) {
            if !stated_internal.contains(dep) {
                problems.push(format!(
                    "code map: `{path}` depends on {dep} (Cargo.toml) but the map does not say so"
                ));
            }
        }
    }
    for (member, manifest) in &manifests {
        if !mapped.contains(member) {
            problems.push(format!("code map: workspace member `{member}` is missing"));
        }
        if member != "tests" && !manifest.opts_into_lints {
            problems.push(format!(
                "{member}/Cargo.toml: add `[lints] workspace = true` (production code is held to \
                 the workspace lints)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_test_the_architecture_cites_exists() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let files = all_rust_files();
    let sources: Vec<String> = files.iter().map(|f| read(f)).collect();
    let file_names: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let has_fn = |name: &str| {
        let (pattern, prefix) = match name.strip_suffix('*') {
            Some(prefix) => (format!("fn {prefix}"), true),
            None => (format!("fn {name}("), false),
        };
        sources.iter().any(|s| {
            if prefix {
                s.contains(&pattern)
            } else {
                s.contains(&pattern) || s.contains(&format!("fn {name}<"))
            }
        })
    };
    let mut problems = Vec::new();
    let mut cited = 0;
    for row in table_rows(&architecture, "proved by") {
        let Some(cell) = row.last() else { continue };
        for span in code_spans(cell) {
            let last = span.rsplit("::").next().unwrap_or(&span).to_owned();
            if last.contains(' ') || last.contains('/') {
                continue; // a command or a path, not a test name
            }
            if let Some(stem) = last.strip_suffix(".rs") {
                cited += 1;
                if !file_names.contains(stem) {
                    problems.push(format!("ARCHITECTURE cites `{span}`: no such file"));
                }
                continue;
            }
            if !last
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*')
            {
                continue;
            }
            cited += 1;
            // A test function, or a test target / module / fuzz target named by its file.
            if last == "*" || has_fn(&last) || file_names.contains(&last) {
                continue;
            }
            problems.push(format!("ARCHITECTURE cites `{span}`: no such test"));
        }
    }
    assert!(
        cited > 20,
        "found only {cited} cited tests: is the table format still parsed?"
    );
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn no_source_cites_a_document_outside_the_repository() {
    let mut problems = Vec::new();
    for file in all_rust_files() {
        if file.ends_with("tests/tidy.rs") {
            continue; // names them to look for them
        }
        let text = read(&file);
        for (i, line) in text.lines().enumerate() {
            for doc in ["DESIGN.md", "PROTOCOL.md", "INTERFACE.md", "shared/"] {
                if line.contains(doc) && !line.contains("../shared/real") {
                    problems.push(format!(
                        "{}:{}: cites {doc} (outside the repository; cite docs/ instead)",
                        file.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    for doc in ["design.md", "protocol.md", "interface.md"] {
        if !root().join("docs").join(doc).exists() {
            problems.push(format!("docs/{doc} is missing"));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
