//! The metric tables are the one source of truth: every metric a family declares is documented on
//! its page under docs/families/ (and the sidecar's own in README's "Self" table), and every
//! `ebpf_sidecar_*` name the README or a family page mentions exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sidecar::metrics::{Metric, Type};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Markdown table rows as cells (leading/trailing pipes dropped, cells trimmed).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let l = l.trim().trim_start_matches('|').trim_end_matches('|');
            l.split(" | ").map(|c| c.trim().to_string()).collect()
        })
        .collect()
}

/// The backticked names in a table cell (`a`, `b` → [a, b]).
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .collect()
}

fn every_metric() -> Vec<(&'static str, Metric)> {
    let own = sidecar::export::METRICS.iter().map(|m| ("sidecar", *m));
    let families = sidecar::probes::registry::FAMILIES
        .iter()
        .flat_map(|f| f.metrics.iter().map(move |m| (f.name, *m)));
    own.chain(families).collect()
}

/// Every name a scrape can show for the declared metrics (histograms with their series).
fn exposed_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, m) in every_metric() {
        let n = m.exposed_name();
        if m.kind == Type::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{n}{s}"));
            }
        }
        names.insert(n);
    }
    names
}

#[test]
fn every_family_declares_its_metrics_once() {
    let mut seen = BTreeSet::new();
    for (family, m) in every_metric() {
        assert!(
            m.name.starts_with("ebpf_sidecar_"),
            "{family}: {} lacks the ebpf_sidecar_ prefix",
            m.name
        );
        assert!(
            seen.insert(m.name),
            "{family}: {} is declared twice",
            m.name
        );
        assert!(
            !m.help.is_empty() && !m.help.contains('\n'),
            "{family}: {}: one-line help",
            m.name
        );
        if m.kind == Type::Counter {
            assert!(
                !m.name.ends_with("_total"),
                "{}: the encoder appends _total",
                m.name
            );
        }
        for l in m.top_n {
            assert!(
                m.labels.iter().any(|x| x.trim_end_matches('?') == *l),
                "{}: top_n label {l} is not one of its labels",
                m.name
            );
        }
    }
    for f in sidecar::probes::registry::FAMILIES {
        assert!(
            !f.metrics.is_empty(),
            "family {} declares no metrics (probes::Family::metrics)",
            f.name
        );
    }
}

#[test]
fn every_declared_metric_has_a_row_on_its_family_page() {
    let mut missing = Vec::new();
    for f in sidecar::probes::registry::FAMILIES {
        let rel = format!("docs/families/{}.md", f.name);
        let page = std::fs::read_to_string(repo().join(&rel))
            .unwrap_or_else(|e| panic!("family {} has no page {rel}: {e}", f.name));
        let table: Vec<Vec<String>> = rows(&page);
        for m in f.metrics {
            let name = m.exposed_name();
            let row = table
                .iter()
                .find(|r| r.first().is_some_and(|c| ticked(c).contains(&name)));
            match row {
                None => missing.push(format!("{rel}: no table row for `{name}`")),
                Some(r) if r.get(1).map(String::as_str) != Some(m.kind.as_str()) => {
                    missing.push(format!(
                        "{rel}: `{name}` is a {}, the page says {:?}",
                        m.kind.as_str(),
                        r.get(1)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn readme_lists_the_sidecars_own_metrics() {
    let readme = read("README.md");
    let start = readme
        .find("### Self")
        .expect("README has a ### Self section");
    let section = &readme[start..];
    let end = section[4..].find("\n### ").map_or(section.len(), |e| e + 4);
    let documented: BTreeSet<String> = rows(&section[..end])
        .iter()
        .filter_map(|r| r.first())
        .flat_map(|c| ticked(c))
        .map(|n| format!("ebpf_sidecar_{n}"))
        .collect();
    for m in sidecar::export::METRICS {
        let name = m.exposed_name();
        assert!(
            documented.contains(&name),
            "README's Self table has no row for `{}`",
            name.trim_start_matches("ebpf_sidecar_")
        );
    }
}

#[test]
fn every_metric_name_in_the_docs_exists() {
    let known = exposed_names();
    let mut pages = vec!["README.md".to_string()];
    for e in std::fs::read_dir(repo().join("docs/families")).expect("docs/families") {
        let p = e.expect("dir entry").path();
        // custom.md's examples are user probes' metrics: whatever their YAML declares.
        if p.extension().is_some_and(|x| x == "md") && !p.ends_with("custom.md") {
            pages.push(format!(
                "docs/families/{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let mut unknown = BTreeSet::new();
    for rel in &pages {
        let text = read(rel);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("ebpf_sidecar_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..end].trim_end_matches('_');
            rest = &tail[end..];
            // Prefixes written in prose (`ebpf_sidecar_http_*`), user metrics (`usdt_<name>`,
            // a custom probe's `ebpf_sidecar_<its metric>`) and the names of things that are not
            // metrics (the sidecar's BPF maps) are not checked.
            let prose = tail[end..].starts_with('*') || tail[end..].starts_with('<');
            if prose
                || name == "ebpf_sidecar"
                || name.starts_with("ebpf_sidecar_usdt")
                || known.contains(name)
            {
                continue;
            }
            unknown.insert(format!("{rel}: {name}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "names in the docs that no family declares (renamed or removed metrics?):\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn probes_metrics_prints_one_line_per_metric() {
    let lines = sidecar::export::metric_lines();
    assert_eq!(lines.len(), every_metric().len());
    for l in &lines {
        let f: Vec<&str> = l.splitn(5, ' ').collect();
        assert_eq!(f.len(), 5, "family name type labels help: {l}");
        assert!(
            ["counter", "gauge", "histogram", "info"].contains(&f[2]),
            "{l}"
        );
    }
}
