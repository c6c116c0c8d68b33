//! Protocol recognition in the net family (issue 20): Redis (RESP2/3), PostgreSQL (protocol v3,
//! simple and extended query) and MySQL/MariaDB (COM_QUERY, COM_STMT_EXECUTE) recognised by
//! content in the target's TCP segments, against the real servers, each compared with the
//! server's own statistics over the same window: redis's `INFO commandstats`, PostgreSQL's
//! `pg_stat_statements`, MariaDB's `SHOW GLOBAL STATUS LIKE 'Com_%'`.
//!
//! Content, not port: every server here listens on a free port the test picks (never 6379, 5432
//! or 3306), so only the bytes can tell the sidecar which protocol it sees.
//!
//! The truth is read through each server's unix socket (`integration::servers`): cgroup_skb never
//! sees unix-socket traffic, so the reading adds nothing to the sidecar's figures; where it shows
//! in the server's own counters (the INFO itself, `Com_show_status`), the tests take it out.
//!
//! Files: redis.rs, postgres.rs, mysql.rs; here the `--protocols` flag and the exposition check.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::servers::*;
use integration::*;

mod mysql;
mod postgres;
mod redis;

/// The sidecar on `pid`'s cgroup, default families, with `extra` flags. `--cpu-budget 0`:
/// protocol recognition is one of the CPU budget's steps (with HTTP, the last one), and exact
/// counts need it on for the whole window even on a loaded CI machine.
fn sidecar(pid: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec!["--target-pid", pid, "--cpu-budget", "0"];
    args.extend_from_slice(extra);
    Sidecar::start(&args)
}

/// Run a client: inside `cc` when the target is the client, else from the test (outside every
/// monitored cgroup), with `input` on its stdin.
fn client_output(cc: Option<&ClientCgroup>, cmd: &mut Command, input: &[u8]) -> Output {
    if let Some(cc) = cc {
        return cc.output(cmd, input);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The other direction.
fn opposite(direction: &str) -> &'static str {
    if direction == "server" {
        "client"
    } else {
        "server"
    }
}

/// The statement kinds of the postgres and mysql metrics.
const KINDS: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "other",
];

/// The `kind` label of an SQL statement as the contract defines it (first keyword; `END` is
/// COMMIT, `START TRANSACTION` BEGIN, `ABORT` ROLLBACK), applied to the servers' own statement
/// texts (pg_stat_statements' normalised query) to build the truth.
fn sql_kind(text: &str) -> &'static str {
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    match words.first().map(String::as_str) {
        Some("SELECT") => "SELECT",
        Some("INSERT") => "INSERT",
        Some("UPDATE") => "UPDATE",
        Some("DELETE") => "DELETE",
        Some("BEGIN") => "BEGIN",
        Some("START") if words.get(1).map(String::as_str) == Some("TRANSACTION") => "BEGIN",
        Some("COMMIT" | "END") => "COMMIT",
        Some("ROLLBACK" | "ABORT") => "ROLLBACK",
        _ => "other",
    }
}

#[test]
fn sql_kind_follows_the_contract() {
    for (sql, kind) in [
        ("select 1", "SELECT"),
        (
            "  SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT",
        ),
        ("insert into t values (1)", "INSERT"),
        ("UPDATE t SET v = 1", "UPDATE"),
        ("delete from t", "DELETE"),
        ("BEGIN", "BEGIN"),
        ("start transaction", "BEGIN"),
        ("END", "COMMIT"),
        ("commit", "COMMIT"),
        ("ABORT", "ROLLBACK"),
        ("rollback", "ROLLBACK"),
        ("selec 1", "other"),
        ("vacuum analyze pgbench_branches", "other"),
        ("copy pgbench_accounts from stdin", "other"),
        ("start replication", "other"),
    ] {
        assert_eq!(sql_kind(sql), kind, "{sql}");
    }
}

/// Counts by kind, zeros dropped; every kind must be one of the contract's.
fn by_kind(c: &Counts) -> Counts {
    for k in c.keys() {
        assert!(
            KINDS.contains(&k.as_str()),
            "kind {k:?} is not one of {KINDS:?}"
        );
    }
    let mut out = c.clone();
    out.retain(|_, v| *v > 0);
    out
}

/// `after - before`, by key, zeros dropped (counters only grow).
fn delta(after: &Counts, before: &Counts) -> Counts {
    let mut out = after.clone();
    for (k, v) in out.iter_mut() {
        *v -= before.get(k).copied().unwrap_or(0);
    }
    out.retain(|_, v| *v > 0);
    out
}

/// Poll until the sum of `name{filter}` reaches `want` (a reply is counted when the segment
/// carrying it leaves; give the scrape a moment), then return the scrape.
fn scrape_when(sc: &Sidecar, name: &str, filter: &[(&str, &str)], want: u64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = sc.scrape();
        if m.sum(name, filter) as u64 >= want || Instant::now() > deadline {
            // One more beat: anything beyond `want` shows as a difference, not as a race.
            std::thread::sleep(Duration::from_millis(200));
            return sc.scrape();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connections the recogniser stopped following, by "protocol reason".
fn untracked(m: &Metrics) -> Counts {
    by_labels(
        m,
        "ebpf_sidecar_protocol_untracked_streams_total",
        &[],
        &["protocol", "reason"],
    )
}

/// No connection of the workload was given up by the recogniser.
fn assert_all_tracked(m: &Metrics, what: &str) {
    let untracked = untracked(m);
    assert!(
        untracked.is_empty(),
        "{what}: connections the recogniser stopped following: {untracked:?}"
    );
}

/// Every series of the metrics whose names start with one of `prefixes`.
fn series_named<'a>(m: &'a Metrics, prefixes: &[&str]) -> Vec<&'a str> {
    m.series
        .iter()
        .map(|(n, _, _)| n.as_str())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

const PROTOCOL_PREFIXES: [&str; 3] = [
    "ebpf_sidecar_redis_",
    "ebpf_sidecar_postgres_",
    "ebpf_sidecar_mysql_",
];

/// One client of each protocol run inside `cc` against servers outside it: 100 redis GETs, 3
/// postgres SELECTs (psql, simple query), 4 mysql statements (3 SELECT, 1 INSERT).
fn three_clients(cc: &ClientCgroup, redis: &Redis, pg: &Postgres, db: &MariaDb) {
    cc.run(
        Command::new(need("redis-benchmark", "redis-tools"))
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
            .args(["-t", "get", "-n", "100", "-c", "1", "-q"]),
    );
    cc.run(
        Command::new(pg_bin("psql"))
            .arg(pg.conninfo("postgres", "disable"))
            .args([
                "-X", "-q", "-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3",
            ]),
    );
    db.local("CREATE DATABASE IF NOT EXISTS w; CREATE TABLE IF NOT EXISTS w.t (id INT)");
    cc.run(
        Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &db.port.to_string(), "-uroot"])
            .args([
                "-e",
                "SELECT 1; SELECT 2; INSERT INTO w.t VALUES (1); SELECT 3",
            ]),
    );
}

/// The three clients under `--protocols LIST`: the series of the protocols in `kept` are there,
/// the others' absent.
fn only(tag: &str, list: &str, kept: &[&str]) {
    require_root();
    let (redis, pg, db) = (
        Redis::start(tag),
        Postgres::start(tag, &PgOptions::default()),
        MariaDb::start(tag),
    );
    let cc = ClientCgroup::new(tag);
    let sc = sidecar(&cc.pid(), &["--protocols", list]);
    three_clients(&cc, &redis, &pg, &db);
    std::thread::sleep(Duration::from_millis(500));
    let m = sc.scrape();
    // The clients' traffic was seen (the net family is on) ...
    assert!(
        m.sum(
            "ebpf_sidecar_tcp_connections_total",
            &[("direction", "active")]
        ) >= 3.0,
        "the clients' connections are counted"
    );
    // ... and only the listed protocols recognised.
    for prefix in PROTOCOL_PREFIXES {
        let protocol = prefix
            .trim_start_matches("ebpf_sidecar_")
            .trim_end_matches('_');
        let present = series_named(&m, &[prefix]);
        if kept.contains(&protocol) {
            assert!(!present.is_empty(), "--protocols {list}: {protocol} series");
        } else {
            assert!(
                present.is_empty(),
                "--protocols {list}: no {protocol} series, got {present:?}"
            );
        }
    }
    if kept.contains(&"redis") {
        assert_eq!(
            m.sum(
                "ebpf_sidecar_redis_commands_total",
                &[("direction", "client"), ("command", "get")]
            ),
            100.0
        );
    }
}

#[test]
fn protocols_http_leaves_redis_postgres_and_mysql_out() {
    only("only-http", "http", &[]);
}

#[test]
fn protocols_redis_recognises_redis_alone() {
    only("only-redis", "redis", &["redis"]);
}

#[test]
fn protocols_flag_rejects_an_unknown_protocol_naming_the_valid_ones() {
    require_root();
    let out = Command::new(sidecar_bin())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--target-pid", "1", "--protocols", "redis,ftp"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ftp"), "names the bad value: {stderr}");
    for valid in ["http", "redis", "postgres", "mysql"] {
        assert!(stderr.contains(valid), "names {valid}: {stderr}");
    }
}

#[test]
fn all_three_protocols_as_client_in_one_promtool_clean_scrape() {
    require_root();
    let (redis, pg, db) = (
        Redis::start("promtool"),
        Postgres::start("promtool", &PgOptions::default()),
        MariaDb::start("promtool"),
    );
    let cc = ClientCgroup::new("promtool");
    let sc = sidecar(&cc.pid(), &[]);
    three_clients(&cc, &redis, &pg, &db);
    let m = scrape_when(
        &sc,
        "ebpf_sidecar_mysql_queries_total",
        &[("direction", "client")],
        4,
    );
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    let client = [("direction", "client")];
    // 100 GETs and redis-benchmark's two CONFIG GETs at its start.
    assert_eq!(
        m.sum(
            "ebpf_sidecar_redis_commands_total",
            &[("direction", "client"), ("command", "get")]
        ),
        100.0
    );
    assert_eq!(
        by_labels(
            &m,
            "ebpf_sidecar_postgres_queries_total",
            &client,
            &["kind"]
        ),
        Counts::from([("SELECT".to_string(), 3)])
    );
    assert_eq!(
        by_labels(&m, "ebpf_sidecar_mysql_queries_total", &client, &["kind"]),
        Counts::from([("INSERT".to_string(), 1), ("SELECT".to_string(), 3)])
    );
    assert_all_tracked(&m, "three clients");
}
