//! The layering holds: no cycles between the crate's top-level modules,
//! services never name HTTP types, no source file grows past 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The HTTP edge and the program's entry points; everything else is core.
const EDGE: [&str; 3] = ["http", "startup", "main"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without comments.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn all_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    (src, files)
}

#[test]
fn top_level_modules_import_each_other_in_no_cycle() {
    let (src, files) = all_sources();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top_module(&src, file);
        let text = code(file);
        for part in text.split("crate::").skip(1) {
            let to: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !to.is_empty() && to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, a: &str, b: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a.to_string()];
        while let Some(n) = todo.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if next == b {
                    return true;
                }
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        false
    }
    let cycles: Vec<(String, String)> = edges
        .iter()
        .flat_map(|(a, tos)| tos.iter().map(move |b| (a.clone(), b.clone())))
        .filter(|(a, b)| reaches(&edges, b, a))
        .collect();
    assert!(
        cycles.is_empty(),
        "module cycles: {cycles:?}\nedges: {edges:?}"
    );
    // The services stand below the edge.
    for core in [
        "auth",
        "analytics",
        "jobs",
        "keys",
        "mail",
        "config",
        "db",
        "cache",
        "time",
        "json",
    ] {
        assert!(!reaches(&edges, core, "http"), "{core} reaches http");
    }
}

#[test]
fn services_never_name_http_types() {
    let (src, files) = all_sources();
    for file in files {
        if EDGE.contains(&top_module(&src, &file).as_str()) {
            continue;
        }
        let text = code(&file);
        for name in ["ApiError", "AppState", "actix"] {
            assert!(!text.contains(name), "{} names {name}", file.display());
        }
    }
}

#[test]
fn no_source_file_over_600_lines() {
    let (_, files) = all_sources();
    for file in files {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 600, "{} has {lines} lines", file.display());
    }
}
