//! Redis: commands by name equal `INFO commandstats` calls deltas, errors equal its
//! `failed_calls`, the duration histogram counts every answered command; the target as server
//! (redis-server in the test cgroup) and as client (redis-benchmark and redis-cli in it).
//!
//! Ground truth details: redis-benchmark sends `CONFIG GET save` and `CONFIG GET appendonly` at
//! its start (commandstats `config|get`: the metric's label is the request's first word,
//! `config`), and with `-P 16` runs a few more requests than `-n` (each client fills its last
//! pipeline): the counts come from commandstats, never from `-n`. The INFO of the first reading
//! is in the second one (redis counts a command after running it); it went through the unix
//! socket, so the sidecar never saw it and it is taken out.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

/// Requests per redis-benchmark test.
const N: &str = "2000";
/// INCRs on a list key (WRONGTYPE errors), over RESP2 and over RESP3.
const K2: u64 = 7;
const K3: u64 = 4;

/// Calls between two readings by the metric's command label (`config|get` → `config`), less
/// the first reading's own INFO.
fn calls_delta(
    before: &std::collections::BTreeMap<String, CommandStat>,
    after: &std::collections::BTreeMap<String, CommandStat>,
) -> Counts {
    let mut out = Counts::new();
    for (name, s) in after {
        let was = before.get(name).map(|b| b.calls).unwrap_or(0);
        let label = name.split('|').next().unwrap().to_string();
        *out.entry(label).or_default() += s.calls - was;
    }
    *out.get_mut("info").expect("the first reading's INFO") -= 1;
    out.retain(|_, v| *v > 0);
    out
}

/// (failed_calls, rejected_calls) of every command between two readings.
fn errors_delta(
    before: &std::collections::BTreeMap<String, CommandStat>,
    after: &std::collections::BTreeMap<String, CommandStat>,
) -> (Counts, u64) {
    let mut failed = Counts::new();
    let mut rejected = 0;
    for (name, s) in after {
        let b = before.get(name).copied().unwrap_or_default();
        if s.failed > b.failed {
            failed.insert(name.clone(), s.failed - b.failed);
        }
        rejected += s.rejected - b.rejected;
    }
    (failed, rejected)
}

/// redis-benchmark's five commands with `-P pipeline`, RESP3 (`-3`: HELLO 3 on every
/// connection first) when `resp3`.
fn benchmark(port: u16, pipeline: &str, resp3: bool) -> Command {
    let mut c = Command::new(need("redis-benchmark", "redis-tools"));
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set,get,incr,lpush,rpop", "-n", N, "-c", "4", "-q"])
        .args(["-P", pipeline]);
    if resp3 {
        c.arg("-3");
    }
    c
}

/// The sidecar's figures in `direction` against the truth: commands by name, errors (all
/// WRONGTYPE on `incr`), the histogram's count; nothing in the other direction.
fn assert_redis(
    m: &Metrics,
    direction: &str,
    truth: &Counts,
    (failed, rejected): (Counts, u64),
    wrongtype: u64,
) {
    let other = if direction == "server" {
        "client"
    } else {
        "server"
    };
    let d = [("direction", direction)];
    let total: u64 = truth.values().sum();
    eprintln!("redis {direction}: commandstats {truth:?}; failed_calls {failed:?}");
    assert_counts_eq(
        &format!("redis_commands_total{{direction={direction}}} vs INFO commandstats calls"),
        &by_labels(m, "ebpf_sidecar_redis_commands_total", &d, &["command"]),
        truth,
    );
    assert_eq!(rejected, 0, "no command was rejected");
    assert_eq!(
        failed,
        Counts::from([("incr".to_string(), wrongtype)]),
        "failed_calls: the WRONGTYPE INCRs"
    );
    assert_counts_eq(
        &format!("redis_errors_total{{direction={direction}}} vs failed_calls"),
        &by_labels(m, "ebpf_sidecar_redis_errors_total", &d, &["command"]),
        &failed,
    );
    assert_eq!(
        m.sum("ebpf_sidecar_redis_command_duration_seconds_count", &d) as u64,
        total,
        "the duration histogram counts every answered command"
    );
    for name in [
        "ebpf_sidecar_redis_commands_total",
        "ebpf_sidecar_redis_errors_total",
    ] {
        assert_eq!(
            m.sum(name, &[("direction", other)]),
            0.0,
            "{name}{{{other}}}"
        );
    }
    assert_all_tracked(m, &format!("redis {direction}"));
}

#[test]
fn redis_server_commands_and_errors_equal_commandstats() {
    require_root();
    let redis = Redis::start("proto-server");
    let sc = sidecar(&redis.pid(), &[]);
    let before = redis.commandstats();
    for (pipeline, resp3) in [("1", false), ("16", false), ("16", true)] {
        let o = benchmark(redis.port, pipeline, resp3).output().unwrap();
        assert!(
            o.status.success(),
            "redis-benchmark -P {pipeline} (RESP3 {resp3}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A raw RESP2 client: INCR on a list key is a WRONGTYPE error reply.
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    resp_call(&mut s, &["DEL", "wt:list", "wt:h", "wt:n"]);
    resp_call(&mut s, &["RPUSH", "wt:list", "a"]);
    for _ in 0..K2 {
        let r = resp_call(&mut s, &["INCR", "wt:list"]);
        assert!(
            r.starts_with(b"-WRONGTYPE"),
            "{}",
            String::from_utf8_lossy(&r)
        );
    }
    // A transaction: MULTI, two queued INCRs (answered +QUEUED), EXEC (an array of both).
    assert_eq!(resp_call(&mut s, &["MULTI"]), b"+OK\r\n");
    for _ in 0..2 {
        assert_eq!(resp_call(&mut s, &["INCR", "wt:n"]), b"+QUEUED\r\n");
    }
    assert_eq!(resp_call(&mut s, &["EXEC"]), b"*2\r\n:1\r\n:2\r\n");
    // An inline command (a line, not an array).
    s.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    drop(s);
    // RESP3: HELLO 3 answers a map, HGETALL a map, a missing key the null `_`.
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    assert!(resp_call(&mut s, &["HELLO", "3"]).starts_with(b"%"));
    assert_eq!(
        resp_call(&mut s, &["HSET", "wt:h", "f", "v", "g", "w"]),
        b":2\r\n"
    );
    assert!(resp_call(&mut s, &["HGETALL", "wt:h"]).starts_with(b"%2\r\n"));
    assert_eq!(resp_call(&mut s, &["GET", "wt:missing"]), b"_\r\n");
    for _ in 0..K3 {
        let r = resp_call(&mut s, &["INCR", "wt:list"]);
        assert!(
            r.starts_with(b"-WRONGTYPE"),
            "{}",
            String::from_utf8_lossy(&r)
        );
    }
    drop(s);
    let after = redis.commandstats();
    let truth = calls_delta(&before, &after);
    let m = scrape_when(
        &sc,
        "ebpf_sidecar_redis_commands_total",
        &[("direction", "server")],
        truth.values().sum(),
    );
    assert_redis(&m, "server", &truth, errors_delta(&before, &after), K2 + K3);
}

#[test]
fn redis_client_commands_and_errors_equal_commandstats() {
    require_root();
    // The server in a cgroup of its own; the target is the clients' cgroup.
    let redis = Redis::start("proto-for-client");
    redis.local(&["RPUSH", "wt:list", "a"]);
    let cc = ClientCgroup::new("redis");
    let sc = sidecar(&cc.pid(), &[]);
    let before = redis.commandstats();
    for pipeline in ["1", "16"] {
        cc.run(&mut benchmark(redis.port, pipeline, false));
    }
    // redis-cli prints the errors and exits 0.
    let out = cc.run(
        Command::new(need("redis-cli", "redis-tools"))
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
            .args(["-r", &K2.to_string(), "INCR", "wt:list"]),
    );
    assert_eq!(out.matches("WRONGTYPE").count() as u64, K2, "{out}");
    let after = redis.commandstats();
    let truth = calls_delta(&before, &after);
    let m = scrape_when(
        &sc,
        "ebpf_sidecar_redis_commands_total",
        &[("direction", "client")],
        truth.values().sum(),
    );
    assert_redis(&m, "client", &truth, errors_delta(&before, &after), K2);
}

/// `--top-n 3` with seven command names (redis-benchmark's five, CONFIG, INFO is not seen): at
/// most three names are kept, each exact, the rest sum to `other`, and nothing is lost.
#[test]
fn redis_command_names_beyond_top_n_are_other() {
    require_root();
    let redis = Redis::start("proto-topn");
    let sc = sidecar(&redis.pid(), &["--top-n", "3"]);
    let before = redis.commandstats();
    let o = benchmark(redis.port, "1", false).output().unwrap();
    assert!(o.status.success(), "redis-benchmark");
    let after = redis.commandstats();
    let truth = calls_delta(&before, &after);
    let total: u64 = truth.values().sum();
    let m = scrape_when(
        &sc,
        "ebpf_sidecar_redis_commands_total",
        &[("direction", "server")],
        total,
    );
    let got = by_labels(
        &m,
        "ebpf_sidecar_redis_commands_total",
        &[("direction", "server")],
        &["command"],
    );
    eprintln!("redis --top-n 3: sidecar {got:?}; commandstats {truth:?}");
    assert_eq!(got.values().sum::<u64>(), total, "nothing lost: {got:?}");
    assert!(got.contains_key("other"), "the rest is `other`: {got:?}");
    let named: Vec<_> = got.iter().filter(|(k, _)| *k != "other").collect();
    assert!(named.len() <= 3, "at most --top-n names: {got:?}");
    for (k, v) in named {
        assert_eq!(Some(v), truth.get(k), "{k}: a kept name is exact");
    }
    assert_all_tracked(&m, "redis --top-n 3");
}
