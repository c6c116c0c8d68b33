//! redis and PostgreSQL: syscalls equal to bpftrace's on the same cgroup, bytes equal to redis's
//! INFO stats, forks equal to PostgreSQL's connection log, fsyncs equal to bpftrace's.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::servers::{PgOptions, Postgres, Redis, pg_bin, resp_call};
use integration::*;

// ---------------------------------------------------------------------------------------------
// redis

fn info_field(info: &str, key: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in INFO"))
        .trim()
        .parse()
        .unwrap()
}

fn redis_under(latency: &str) {
    require_root();
    let bench = need("redis-benchmark", "redis-tools");
    let t0 = Instant::now();
    // Gated: redis's whole life, from its exec, is inside the window.
    let mut redis = Redis::gated(latency);
    let port = redis.port;
    let cg = &redis.cgroup;
    cg.freeze(true);
    let pid = redis.pid();
    let sc = Sidecar::start(&["--target-pid", &pid, "--syscall-latency", latency]);
    let id = reported_cgroup_id(&sc.scrape());
    assert_eq!(id, cg.id(), "target_info cgroup_id is the server's cgroup");
    let bt = Bpftrace::syscalls_of_cgroup(&format!("redis-{latency}"), id);
    cg.freeze(false);
    redis.open();
    let cg = &redis.cgroup;

    let st = Command::new(&bench)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", "3000", "-c", "4", "-d", "100", "-q"])
        .args(["-t", "set,get,incr,lpush,lpop"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "redis-benchmark failed");

    // INFO is the last command: its counters include everything read up to and including its
    // own request, and everything written before its own reply.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let reply = resp_call(&mut s, &["INFO", "stats"]);
    drop(s);
    let info = String::from_utf8_lossy(&reply).to_string();
    let net_in = info_field(&info, "total_net_input_bytes");
    let net_out = info_field(&info, "total_net_output_bytes") + reply.len() as u64;
    let conns = info_field(&info, "total_connections_received");

    let closed = settle(&sc, conns, |m| {
        m.sum("ebpf_sidecar_tcp_connection_duration_seconds_count", &[]) as u64
    });
    // Let redis's timers run a little, then cut the window.
    std::thread::sleep(Duration::from_millis(300));
    cg.freeze(true);
    let truth = named(&bt.finish());
    let m = sc.scrape();
    let calls = sidecar_syscalls(&m);
    let rx = m.sum("ebpf_sidecar_tcp_received_bytes_total", &[]) as u64;
    let tx = m.sum("ebpf_sidecar_tcp_sent_bytes_total", &[]) as u64;
    eprintln!(
        "redis --syscall-latency {latency}: {} syscalls by bpftrace, {} by the sidecar; \
         net_input {net_in} vs tcp_received {rx}; net_output(+INFO reply) {net_out} vs \
         tcp_sent {tx}; {conns} connections ({closed} closed seen); {:.1} s",
        truth.values().sum::<u64>(),
        calls.values().sum::<u64>(),
        t0.elapsed().as_secs_f64()
    );
    assert_counts_eq(
        &format!("redis syscalls by name, --syscall-latency {latency}"),
        &calls,
        &truth,
    );
    assert_eq!(
        rx, net_in,
        "tcp_received_bytes_total = total_net_input_bytes"
    );
    assert_eq!(
        tx, net_out,
        "tcp_sent_bytes_total = total_net_output_bytes + INFO reply"
    );
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
}

#[test]
fn redis_syscalls_equal_bpftrace_and_bytes_equal_info_stats() {
    redis_under("on");
}

#[test]
fn redis_syscalls_equal_bpftrace_counting_only() {
    redis_under("off");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[test]
fn postgres_forks_equal_its_connection_log_and_fsyncs_equal_bpftrace() {
    require_root();
    let pgbench = pg_bin("pgbench");
    let t0 = Instant::now();
    let pg = Postgres::start("forks", &PgOptions::default());
    let port = pg.port.to_string();
    let log = &pg.log;
    let cg = &pg.cgroup;
    std::thread::sleep(Duration::from_millis(300));
    cg.freeze(true);
    let log_start = std::fs::read_to_string(log).unwrap().len();
    let pid = pg.pid();
    let sc = Sidecar::start(&["--target-pid", &pid]);
    let id = reported_cgroup_id(&sc.scrape());
    assert_eq!(id, cg.id());
    let bt = Bpftrace::syscalls_of_cgroup("pg", id);
    cg.freeze(false);

    let pgb = |args: &[&str]| {
        let o = Command::new(&pgbench)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    pgb(&["-i", "-s", "1", "-q"]);
    pgb(&["-c", "4", "-j", "2", "-t", "100"]);
    // A connection per transaction: many short backends.
    pgb(&["-C", "-c", "2", "-j", "1", "-t", "15"]);
    std::thread::sleep(Duration::from_millis(500));
    cg.freeze(true);
    let truth = named(&bt.finish());
    let m = sc.scrape();
    let calls = sidecar_syscalls(&m);
    let text = std::fs::read_to_string(log).unwrap();
    let connections = text[log_start..]
        .lines()
        .filter(|l| l.contains("connection received:"))
        .count() as u64;
    let forks = m.sum("ebpf_sidecar_process_forks_total", &[]) as u64;
    let pick = |c: &Counts| -> Counts {
        c.iter()
            .filter(|(k, _)| *k == "fsync" || *k == "fdatasync")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    eprintln!(
        "postgres: forks {forks} vs {connections} connections logged; fsync/fdatasync sidecar \
         {:?} bpftrace {:?}; all syscalls {} vs {}; {:.1} s",
        pick(&calls),
        pick(&truth),
        calls.values().sum::<u64>(),
        truth.values().sum::<u64>(),
        t0.elapsed().as_secs_f64()
    );
    assert!(connections >= 30, "pgbench connected {connections} times");
    assert_eq!(
        forks, connections,
        "one backend forked per logged connection"
    );
    assert!(pick(&truth).values().sum::<u64>() > 0, "the server synced");
    assert_counts_eq("postgres fsync/fdatasync", &pick(&calls), &pick(&truth));
    // And every other syscall of the same window.
    assert_counts_eq("postgres syscalls by name", &calls, &truth);
}
