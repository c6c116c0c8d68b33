//! Dependencies go one way: bottom modules (metrics, tables, events, monitored, usdt, …) →
//! the probe contract (`probes`: trait, object, dispatch) → families (`probes/<family>`) →
//! the registry (`probes/registry`) → `export` → `app` → `main`. No import circle, no family
//! importing another family, the exporter or the app.
//!
//! The graph is read from the sources (`crate::` and `super::` paths), and printed in one line
//! when the test runs with `--nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules under probes/ that are part of the contract every family uses, not families.
const CONTRACT: &[&str] = &["object", "dispatch"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: src/probes/net/tcp.rs → [probes, net, tcp]; mod.rs is its dir.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The node a module path belongs to: a top-level module, or `probes/<family>`.
fn node(path: &[String]) -> Option<String> {
    let first = path.first()?;
    if first == "probes" {
        return Some(match path.get(1) {
            Some(m) if CONTRACT.contains(&m.as_str()) => "probes".into(),
            Some(m) if m.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                format!("probes/{m}")
            }
            _ => "probes".into(),
        });
    }
    Some(first.clone())
}

/// `crate::a::b`, `super::a` (and, in main.rs, `sidecar::a::b`) paths in a source file, as
/// module paths; `use super::{a, b::c}` gives one path per item.
fn references(module: &[String], text: &str, crate_name: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (prefix, base) in [(crate_name, Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(prefix) {
            let boundary = rest[..i]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            let mut t = &rest[i + prefix.len()..];
            rest = t;
            if !boundary {
                continue;
            }
            let mut path = base.clone();
            while let Some(r) = t.strip_prefix("super::") {
                path.pop();
                t = r;
            }
            // Walk `a::b::` segments, then a `{…}` list or a last segment.
            loop {
                let seg = ident(t);
                if seg.is_empty() {
                    break;
                }
                t = &t[seg.len()..];
                if let Some(r) = t.strip_prefix("::") {
                    path.push(seg);
                    t = r;
                } else {
                    path.push(seg);
                    break;
                }
            }
            if let Some(list) = t.strip_prefix('{') {
                let mut depth = 0usize;
                let mut item_start = 0usize;
                let mut items = Vec::new();
                for (j, c) in list.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            items.push(&list[item_start..j]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(&list[item_start..j]);
                            item_start = j + 1;
                        }
                        _ => {}
                    }
                }
                for item in items {
                    let first = ident(item);
                    let mut p = path.clone();
                    if !first.is_empty() && first != "self" {
                        p.push(first);
                    }
                    out.push(p);
                }
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let module = module_of(&f);
        let text = std::fs::read_to_string(&f).expect("read source");
        // Unit tests may reach anything.
        let text = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
        let Some(from) = node(&module).or_else(|| Some("main".into())) else {
            continue;
        };
        let from = if module.is_empty() {
            // lib.rs / main.rs
            f.file_stem().unwrap().to_string_lossy().to_string()
        } else {
            from
        };
        let entry = g.entry(from.clone()).or_default();
        let crate_name = if module == ["main"] {
            "sidecar::"
        } else {
            "crate::"
        };
        for r in references(&module, &text, crate_name) {
            if let Some(to) = node(&r)
                && to != from
                && !to.is_empty()
            {
                entry.insert(to);
            }
        }
    }
    g
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circle() {
    let g = graph();
    let line: Vec<String> = g
        .iter()
        .filter(|(_, to)| !to.is_empty())
        .map(|(from, to)| {
            format!(
                "{from} → {}",
                to.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    println!("import graph: {}", line.join("; "));
    if let Some(c) = cycle(&g) {
        panic!("import circle: {}", c.join(" → "));
    }
}

#[test]
fn families_sit_below_the_exporter_and_apart_from_each_other() {
    let g = graph();
    let mut bad = Vec::new();
    for (from, to) in &g {
        let Some(family) = from.strip_prefix("probes/") else {
            continue;
        };
        if family == "registry" {
            continue;
        }
        for t in to {
            let above = ["export", "app", "main", "lib"].contains(&t.as_str());
            let other_family = t.starts_with("probes/") && t != from;
            if above || other_family {
                bad.push(format!("{from} imports {t}"));
            }
        }
    }
    for low in [
        "metrics",
        "tables",
        "events",
        "monitored",
        "usdt",
        "output",
        "caps",
        "seccomp",
    ] {
        for t in g.get(low).into_iter().flatten() {
            if t.starts_with("probes") || ["export", "app"].contains(&t.as_str()) {
                bad.push(format!("{low} (below the families) imports {t}"));
            }
        }
    }
    for t in g.get("export").into_iter().flatten() {
        if t.starts_with("probes/") && t != "probes/registry" {
            bad.push(format!("export reaches the family {t} directly"));
        }
    }
    for user in ["app", "main"] {
        for t in g.get(user).into_iter().flatten() {
            if t.starts_with("probes/") && t != "probes/registry" {
                bad.push(format!("{user} names the family {t}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
