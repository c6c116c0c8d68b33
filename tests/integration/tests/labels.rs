//! Label values mean one thing: processes named like the sidecar's own values (`other`, the
//! top-N overflow; `unknown`, an unreadable name), an empty name and names that are not UTF-8
//! each keep a series of their own, and survive the exposition and a Prometheus parser intact.

use integration::*;

#[test]
fn names_that_read_like_reserved_values_or_are_not_utf8_stay_distinct() {
    require_root();
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (m, out) = run_workload(
        "labels-names",
        "process",
        &[],
        "names",
        &[&dir.to_string_lossy()],
    );
    assert_eq!(out.trim(), "ok");
    let execs = |c: &str| m.sum("ebpf_sidecar_process_execs_total", &[("comm", c)]);
    let exits = |c: &str| m.sum("ebpf_sidecar_process_exits_total", &[("comm", c)]);
    // As the exposition writes them: a backslash marks what the sidecar escaped or prefixed.
    for comm in [
        r"\other",
        r"\unknown",
        r"\xff\xfe",
        r"\xff\xfd",
        r"back\x5cslash",
    ] {
        assert_eq!(execs(comm), 1.0, "exec of {comm:?} in\n{}", m.text);
        assert_eq!(exits(comm), 1.0, "exit of {comm:?}");
    }
    assert_eq!(
        exits(r"\empty"),
        1.0,
        "the process that renamed itself to nothing"
    );
    for reserved in ["other", "unknown"] {
        assert_eq!(
            m.get("ebpf_sidecar_process_execs_total", &[("comm", reserved)]),
            None,
            "no overflow or fallback series: nothing overflowed, every name was read"
        );
    }
    // With one admitted name, the same workload overflows: `other` now means the overflow.
    let (m, _) = run_workload(
        "labels-names-top1",
        "process",
        &["--top-n", "1"],
        "names",
        &[&dir.to_string_lossy()],
    );
    let execs = m.sum("ebpf_sidecar_process_execs_total", &[]);
    let named: Vec<_> = m
        .matching("ebpf_sidecar_process_execs_total", &[])
        .map(|(l, _)| l["comm"].clone())
        .collect();
    assert_eq!(execs, 6.0, "five names and the workload: {named:?}");
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(named.contains(&"other".to_string()), "{named:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
