//! The built-in runtime packs, in the `--config` YAML form wherever that form can say it
//! (sidecar/packs/*.yaml, embedded): parsed by the same parser as users' files and turned into
//! hooks once, at first use. What the form cannot say stays in [`super::hooks::BUILT_IN_HOOKS`].

use std::sync::LazyLock;

use super::discovery::Runtime;
use super::hooks::{BUILT_IN_HOOKS, Hook, Prog, Site, slot};
use crate::usdt::config::{self, Kind, ProbeName, Scope};

/// (file name, text) of each pack; `ebpf-sidecar usdt packs` prints them.
pub const FILES: [(&str, &str); 3] = [
    ("python.yaml", include_str!("../../../packs/python.yaml")),
    ("java.yaml", include_str!("../../../packs/java.yaml")),
    ("node.yaml", include_str!("../../../packs/node.yaml")),
];

/// The metrics a pack may declare, and where the exporter reads each: (runtime, name, slot,
/// only with --runtime-calls).
const KNOWN: &[(Runtime, &str, u32, bool)] = &[
    (
        Runtime::Python,
        "runtime_gc_duration_seconds",
        slot::PY_GC,
        false,
    ),
    (
        Runtime::Python,
        "runtime_function_calls",
        slot::PY_CALLS,
        true,
    ),
    (Runtime::Python, "runtime_imports", slot::PY_IMPORTS, false),
    (
        Runtime::Java,
        "runtime_gc_duration_seconds",
        slot::JAVA_GC,
        false,
    ),
    (
        Runtime::Java,
        "runtime_classes_loaded",
        slot::JAVA_CLASSES,
        false,
    ),
    (
        Runtime::Java,
        "runtime_threads_started",
        slot::JAVA_THREADS,
        false,
    ),
    (
        Runtime::Node,
        "runtime_gc_duration_seconds",
        slot::NODE_USDT_GC,
        false,
    ),
];

/// Every hook: the packs' and the built-in ones.
pub(super) static HOOKS: LazyLock<Vec<Hook>> = LazyLock::new(|| {
    let mut hooks = Vec::new();
    for (file, text) in FILES {
        // Embedded text, checked by the tests below: a failure here is a build defect.
        hooks.extend(hooks_of(file, text).unwrap_or_else(|e| panic!("built-in pack {e}")));
    }
    hooks.extend(BUILT_IN_HOOKS.iter().copied());
    hooks
});

/// Hook sites name their probes with 'static strings; packs are parsed once per process.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn hooks_of(file: &str, text: &str) -> Result<Vec<Hook>, String> {
    let declared = config::parse(file, text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in declared {
        let runtime = match &d.scope {
            Scope::Runtime(r) => Runtime::from_name(r),
            Scope::Binary(_) => None,
        }
        .ok_or_else(|| format!("{file}: {}: a pack entry names its runtime:", d.name))?;
        let &(_, _, slot, calls_only) = KNOWN
            .iter()
            .find(|(r, n, ..)| *r == runtime && *n == d.name)
            .ok_or_else(|| {
                format!(
                    "{file}: {}: not a metric the {} pack exports",
                    d.name,
                    runtime.name()
                )
            })?;
        let label = d.labels.first().map(|l| l.arg);
        let label2 = d.labels.get(1).map(|l| l.arg);
        let hook = |p: &ProbeName, prog, label, label2| Hook {
            runtime,
            site: Site::Usdt {
                provider: leak(&p.provider),
                probe: leak(&p.probe),
            },
            prog,
            slot,
            label,
            label2,
            calls_only,
        };
        match &d.kind {
            Kind::Count { probe } => out.push(hook(probe, Prog::Count, label, label2)),
            Kind::CountStrings { probe } => out.push(hook(probe, Prog::Call, label, label2)),
            Kind::Pair { begin, end } => {
                out.push(hook(begin, Prog::Begin, label, None));
                out.push(hook(end, Prog::End, None, None));
            }
            Kind::Value { .. } => {
                return Err(format!(
                    "{file}: {}: packs have no argument histograms",
                    d.name
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook as one line: runtime provider:probe program slot labels [calls only].
    fn line(h: &Hook) -> String {
        let Site::Usdt { provider, probe } = h.site else {
            panic!("packs only make USDT hooks")
        };
        format!(
            "{} {provider}:{probe} {} slot {} labels {:?} {:?}{}",
            h.runtime.name(),
            h.prog.name(),
            h.slot,
            h.label,
            h.label2,
            if h.calls_only { " calls only" } else { "" }
        )
    }

    /// The packs make exactly the hooks the Rust tables had before they moved to YAML.
    #[test]
    fn packs_make_the_usdt_hooks() {
        let hooks: Vec<_> = FILES
            .iter()
            .flat_map(|(f, t)| hooks_of(f, t).unwrap())
            .collect();
        let got: Vec<String> = hooks.iter().map(line).collect();
        let want = [
            "python python:gc__start rt_begin slot 0 labels Some(0) None",
            "python python:gc__done rt_end slot 0 labels None None",
            "python python:function__entry rt_call slot 1 labels Some(0) Some(1) calls only",
            "python python:import__find__load__start rt_count slot 2 labels None None",
            "java hotspot:gc__begin rt_begin slot 3 labels Some(0) None",
            "java hotspot:gc__end rt_end slot 3 labels None None",
            "java hotspot:class__loaded rt_count slot 4 labels None None",
            "java hotspot:thread__start rt_count slot 5 labels None None",
            "node node:gc__start rt_begin slot 10 labels Some(0) None",
            "node node:gc__done rt_end slot 10 labels None None",
        ];
        assert_eq!(got, want);
        assert_eq!(HOOKS.len(), hooks.len() + BUILT_IN_HOOKS.len());
    }

    #[test]
    fn pack_errors_name_the_entry() {
        let cases = [
            (
                "metrics: [{name: runtime_gc_pauses, runtime: python, probe: python:gc__start}]",
                "runtime_gc_pauses: not a metric the python pack exports",
            ),
            (
                "metrics: [{name: runtime_imports, binary: /usr/bin/python3, probe: python:x}]",
                "a pack entry names its runtime",
            ),
            (
                "metrics: [{name: runtime_imports, runtime: python, probe: p:x, value_arg: 1}]",
                "no argument histograms",
            ),
        ];
        for (text, want) in cases {
            let e = hooks_of("p.yaml", text).err().unwrap();
            assert!(e.contains(want), "{e}");
        }
    }
}
