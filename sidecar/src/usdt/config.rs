//! `--config FILE`: USDT metrics declared in YAML, without writing C.
//!
//! ```yaml
//! metrics:
//!   - name: python_gc_starts          # exported as ebpf_sidecar_usdt_python_gc_starts_total
//!     help: GC runs by generation
//!     runtime: python                 # or binary: /usr/bin/python3.11 (path in the target)
//!     probe: python:gc__start         # count hits
//!     labels: [{name: generation, arg: 0}]
//!   - name: python_calls
//!     binary: /usr/bin/python3.11
//!     probe: python:function__entry
//!     labels: [{name: function, arg: 1, string: true}]
//!   - name: python_gc_seconds         # a histogram of begin → end per thread, in seconds
//!     runtime: python
//!     begin: python:gc__start
//!     end: python:gc__done
//!     labels: [{name: generation, arg: 0}]
//!   - name: request_seconds           # a histogram of an argument holding nanoseconds
//!     binary: /app/server
//!     probe: app:request__done
//!     value_arg: 2
//! ```
//!
//! Every error names the file, the entry (index and name) and what is wrong.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::args::MAX_ARGS;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {detail}")]
    Yaml { file: String, detail: String },
    #[error("{file}: metrics[{index}] ({name}): {detail}")]
    Entry {
        file: String,
        index: usize,
        name: String,
        detail: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    metrics: Vec<RawMetric>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    #[serde(default)]
    help: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    binary: Option<String>,
    #[serde(default)]
    probe: Option<String>,
    #[serde(default)]
    begin: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    value_arg: Option<u32>,
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    name: String,
    arg: u32,
    #[serde(default)]
    string: bool,
}

/// A `provider:probe` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeName {
    pub provider: String,
    pub probe: String,
}

impl std::fmt::Display for ProbeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.probe)
    }
}

/// Where a declared metric attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every binary of this runtime the discovery finds (python, java, node).
    Runtime(String),
    /// This path, as the target's processes see it.
    Binary(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Count hits of a probe, labelled by up to two integer arguments.
    Count { probe: ProbeName },
    /// Count hits labelled by up to two string arguments (read from the target, 64 bytes).
    CountStrings { probe: ProbeName },
    /// Time begin → end per thread (seconds), labelled by one integer argument of begin.
    Pair { begin: ProbeName, end: ProbeName },
    /// Histogram of an argument holding nanoseconds (exported in seconds).
    Value { probe: ProbeName, arg: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub arg: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// Entry index in the file (for error messages).
    pub index: usize,
    /// Metric name without the `ebpf_sidecar_usdt_` prefix.
    pub name: String,
    pub help: String,
    pub scope: Scope,
    pub kind: Kind,
    pub labels: Vec<Label>,
}

impl Declared {
    pub fn metric(&self) -> String {
        format!("ebpf_sidecar_usdt_{}", self.name)
    }

    pub fn is_histogram(&self) -> bool {
        matches!(self.kind, Kind::Pair { .. } | Kind::Value { .. })
    }
}

pub const RUNTIMES: [&str; 3] = ["python", "java", "node"];

fn valid_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn probe_name(s: &str) -> Result<ProbeName, String> {
    match s.split_once(':') {
        Some((p, n)) if !p.is_empty() && !n.is_empty() && !n.contains(':') => Ok(ProbeName {
            provider: p.to_string(),
            probe: n.to_string(),
        }),
        _ => Err(format!("{s:?} is not provider:probe")),
    }
}

/// Parse and check a config file's text. `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Vec<Declared>, ConfigError> {
    let raw: File = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
        file: file.to_string(),
        detail: e.to_string(),
    })?;
    let mut out: Vec<Declared> = Vec::new();
    for (index, m) in raw.metrics.into_iter().enumerate() {
        let err = |detail: String| ConfigError::Entry {
            file: file.to_string(),
            index,
            name: m.name.clone(),
            detail,
        };
        let name = m.name.strip_suffix("_total").unwrap_or(&m.name).to_string();
        if !valid_name(&name) {
            return Err(err("name must match [a-z_][a-z0-9_]*".into()));
        }
        if out.iter().any(|d| d.name == name) {
            return Err(err("a metric of this name is declared twice".into()));
        }
        let scope = match (&m.runtime, &m.binary) {
            (Some(r), None) if RUNTIMES.contains(&r.as_str()) => Scope::Runtime(r.clone()),
            (Some(r), None) => {
                return Err(err(format!(
                    "unknown runtime {r:?} (one of {})",
                    RUNTIMES.join(", ")
                )));
            }
            (None, Some(b)) if b.starts_with('/') => Scope::Binary(PathBuf::from(b)),
            (None, Some(b)) => return Err(err(format!("binary {b:?} is not an absolute path"))),
            _ => return Err(err("give exactly one of runtime: or binary:".into())),
        };
        let mut seen = Vec::new();
        for l in &m.labels {
            if !valid_name(&l.name) || matches!(l.name.as_str(), "le" | "runtime") {
                return Err(err(format!(
                    "label {:?}: must match [a-z_][a-z0-9_]* and not be le or runtime",
                    l.name
                )));
            }
            if seen.contains(&&l.name) {
                return Err(err(format!("label {:?} twice", l.name)));
            }
            seen.push(&l.name);
            if l.arg as usize >= MAX_ARGS {
                return Err(err(format!(
                    "label {:?}: arg {} (probes have at most {MAX_ARGS} arguments, numbered from 0)",
                    l.name, l.arg
                )));
            }
        }
        if m.labels.len() > 2 {
            return Err(err("at most 2 labels".into()));
        }
        let strings = m.labels.iter().filter(|l| l.string).count();
        let kind = match (&m.probe, &m.begin, &m.end, m.value_arg) {
            (Some(p), None, None, None) => {
                let probe = probe_name(p).map_err(&err)?;
                if strings == 0 {
                    Kind::Count { probe }
                } else if strings == m.labels.len() {
                    Kind::CountStrings { probe }
                } else {
                    return Err(err("labels are all strings or all integers".into()));
                }
            }
            (Some(p), None, None, Some(arg)) => {
                if arg as usize >= MAX_ARGS {
                    return Err(err(format!("value_arg {arg} is out of range")));
                }
                Kind::Value {
                    probe: probe_name(p).map_err(&err)?,
                    arg,
                }
            }
            (None, Some(b), Some(e), None) => Kind::Pair {
                begin: probe_name(b).map_err(&err)?,
                end: probe_name(e).map_err(&err)?,
            },
            _ => {
                return Err(err(
                    "give probe: (a counter), probe: and value_arg: (a histogram of an argument), or begin: and end: (a histogram of durations)".into(),
                ));
            }
        };
        let hist = matches!(kind, Kind::Pair { .. } | Kind::Value { .. });
        if hist && (strings > 0 || m.labels.len() > 1) {
            return Err(err(
                "histograms take at most one label, from an integer argument".into(),
            ));
        }
        out.push(Declared {
            index,
            help: m
                .help
                .clone()
                .unwrap_or_else(|| format!("Declared in {file} (metrics[{index}])")),
            name,
            scope,
            kind,
            labels: m
                .labels
                .iter()
                .map(|l| Label {
                    name: l.name.clone(),
                    arg: l.arg,
                })
                .collect(),
        });
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Vec<Declared>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
metrics:
  - name: python_gc_starts_total
    runtime: python
    probe: python:gc__start
    labels: [{name: generation, arg: 0}]
  - name: calls
    binary: /usr/bin/python3.11
    probe: python:function__entry
    labels: [{name: file, arg: 0, string: true}, {name: function, arg: 1, string: true}]
  - name: gc_seconds
    runtime: python
    begin: python:gc__start
    end: python:gc__done
    labels: [{name: generation, arg: 0}]
  - name: value_seconds
    binary: /app/x
    probe: app:done
    value_arg: 2
"#;

    #[test]
    fn good_file() {
        let d = parse("x.yaml", GOOD).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].name, "python_gc_starts");
        assert_eq!(d[0].metric(), "ebpf_sidecar_usdt_python_gc_starts");
        assert!(matches!(d[1].kind, Kind::CountStrings { .. }));
        assert!(d[2].is_histogram());
        assert_eq!(
            d[3].kind,
            Kind::Value {
                probe: ProbeName {
                    provider: "app".into(),
                    probe: "done".into()
                },
                arg: 2
            }
        );
    }

    #[test]
    fn errors_name_file_entry_and_problem() {
        let cases = [
            (
                "metrics: [{name: a, runtime: ruby, probe: p:n}]",
                "metrics[0] (a): unknown runtime \"ruby\"",
            ),
            (
                "metrics: [{name: a, runtime: python, probe: pn}]",
                "\"pn\" is not provider:probe",
            ),
            (
                "metrics: [{name: A, runtime: python, probe: p:n}]",
                "name must match",
            ),
            (
                "metrics: [{name: a, probe: p:n}]",
                "exactly one of runtime: or binary:",
            ),
            (
                "metrics: [{name: a, binary: rel/x, probe: p:n}]",
                "not an absolute path",
            ),
            (
                "metrics: [{name: a, runtime: python, begin: p:n}]",
                "give probe:",
            ),
            (
                "metrics: [{name: a, runtime: python, probe: p:n, labels: [{name: x, arg: 99}]}]",
                "arg 99",
            ),
            (
                "metrics: [{name: a, runtime: python, probe: p:n, labels: [{name: le, arg: 0}]}]",
                "not be le",
            ),
            (
                "metrics: [{name: a, runtime: python, probe: p:n, colour: red}]",
                "unknown field `colour`",
            ),
            (
                "metrics: [{name: a, runtime: python, probe: p:n}, {name: a, runtime: java, probe: p:n}]",
                "metrics[1] (a): a metric of this name is declared twice",
            ),
            (
                "metrics: [{name: a, runtime: python, begin: p:n, end: p:m, labels: [{name: s, arg: 0, string: true}]}]",
                "histograms take",
            ),
            ("metrics: [", "f.yaml:"),
        ];
        for (text, want) in cases {
            let e = parse("f.yaml", text).unwrap_err().to_string();
            assert!(e.starts_with("f.yaml: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = load(Path::new("/nonexistent/x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.yaml"), "{e}");
    }
}
