//! Apps with distinct known workloads (tests of the shared kernel side and of node mode): app
//! `i` makes its own numbers of calls, errors, execs and HTTP exchanges per trigger, so a count
//! leaking between targets shows.

use std::time::Duration;

use crate::docker::{self, Container};
use crate::{Metrics, wait_for, workload};

/// The exit code of the workload's runs.
pub const CODE: i32 = 42;

/// What app `i` does per trigger: distinct numbers so a count leaking between slots shows.
pub fn truth(i: usize) -> (u64, u64, u64, u64) {
    let i = i as u64;
    // getppid, openat ENOENT, execs of true, HTTP exchanges (each its own TCP connection)
    (1000 * (i + 1) + 7, 3 + 2 * i, 1 + i, 2 + 3 * i)
}

pub fn app(name: &str, i: usize) -> Container {
    app_with(name, i, &[])
}

/// App `i` with more `docker run` options (labels, say).
pub fn app_with(name: &str, i: usize, docker_opts: &[&str]) -> Container {
    let counted = format!("{}:/counted:ro", workload("counted").display());
    let http = format!("{}:/http_loop:ro", workload("http_loop").display());
    let (n, m, k, _) = truth(i);
    let (n, m, k) = (n.to_string(), m.to_string(), k.to_string());
    let code = CODE.to_string();
    let mut args: Vec<&str> = docker_opts.to_vec();
    args.extend_from_slice(&[
        "-v",
        &counted,
        "-v",
        &http,
        "debian:bookworm-slim",
        "/counted",
        "serve",
        &n,
        &m,
        &k,
        &code,
    ]);
    let c = Container::run(name, &args);
    wait_for("workload ready", Duration::from_secs(20), || {
        c.logs().contains("ready").then_some(())
    });
    c
}

/// One run of the app's workload: counted's run (USR1) and its HTTP exchanges.
pub fn work(app: &Container, i: usize, nth: usize) {
    docker::ok(&["kill", "-s", "USR1", &app.0]);
    wait_for("workload done", Duration::from_secs(30), || {
        (app.logs().matches(&format!("done {CODE}")).count() >= nth).then_some(())
    });
    let (_, _, _, r) = truth(i);
    let out = docker::ok(&["exec", &app.0, "/http_loop", &r.to_string()]);
    assert!(out.contains(&format!("requests={r}")), "{out}");
}

/// `times` runs of app `i`, exactly.
pub fn assert_app(m: &Metrics, i: usize, times: u64, who: &str) {
    assert_app_in(m, &[], i, times, who)
}

/// `times` runs of app `i`, exactly, in the series that also carry `scope` (node mode: the
/// container's label).
pub fn assert_app_in(m: &Metrics, scope: &[(&str, &str)], i: usize, times: u64, who: &str) {
    let (n, e, k, r) = truth(i);
    let t = times as f64;
    let eq = |name: &str, labels: &[(&str, &str)], want: u64| {
        let labels: Vec<(&str, &str)> = labels.iter().chain(scope).copied().collect();
        let labels = labels.as_slice();
        assert_eq!(
            m.sum(name, labels),
            want as f64 * t,
            "{who}: {name}{labels:?}"
        );
    };
    eq("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")], n);
    eq(
        "ebpf_sidecar_syscall_errors_total",
        &[("syscall", "openat"), ("errno", "ENOENT")],
        e,
    );
    eq("ebpf_sidecar_process_execs_total", &[("comm", "true")], k);
    eq(
        "ebpf_sidecar_process_exits_total",
        &[("comm", "true"), ("code", "0"), ("signal", "0")],
        k,
    );
    eq(
        "ebpf_sidecar_process_execs_total",
        &[("comm", "http_loop")],
        1,
    );
    eq(
        "ebpf_sidecar_tcp_connections_total",
        &[("direction", "active")],
        r,
    );
    eq(
        "ebpf_sidecar_tcp_connections_total",
        &[("direction", "passive")],
        r,
    );
    eq(
        "ebpf_sidecar_http_requests_total",
        &[
            ("direction", "server"),
            ("method", "GET"),
            ("status", "200"),
        ],
        r,
    );
    eq(
        "ebpf_sidecar_http_requests_total",
        &[
            ("direction", "client"),
            ("method", "GET"),
            ("status", "200"),
        ],
        r,
    );
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", scope), 0.0, "{who}");
}
