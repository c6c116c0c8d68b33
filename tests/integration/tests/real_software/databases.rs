//! redis and PostgreSQL: syscalls equal to bpftrace's on the same cgroup, bytes equal to redis's
//! INFO stats, forks equal to PostgreSQL's connection log, fsyncs equal to bpftrace's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::*;

// ---------------------------------------------------------------------------------------------
// redis

/// One RESP command on `s`; returns the bytes of the whole reply.
fn redis_cmd(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the connection");
        raw.extend_from_slice(&buf[..n]);
        // A bulk string reply: $len\r\n<len bytes>\r\n; a simple reply: one line.
        if let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
            if raw[0] != b'$' {
                return raw;
            }
            let len: usize = std::str::from_utf8(&raw[1..i]).unwrap().parse().unwrap();
            if raw.len() >= i + 2 + len + 2 {
                return raw;
            }
        }
    }
}

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
    let server = need("redis-server", "redis-server");
    let bench = need("redis-benchmark", "redis-tools");
    let t0 = Instant::now();
    let dir = Scratch::new(&format!("redis-{latency}"));
    let port = free_port();
    let cg = TestCgroup::new(&format!("redis-{latency}"));
    // sh waits for one line before it becomes redis-server: redis's whole life, from its exec,
    // is inside the window.
    let mut child = cg.spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("read _ && exec \"$0\" \"$@\"")
            .arg(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", "", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut go = child.stdin.take().unwrap();
    let _redis = Proc(child);
    cg.freeze(true);
    let pid = _redis.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &pid, "--syscall-latency", latency]);
    let id = reported_cgroup_id(&sc.scrape());
    assert_eq!(id, cg.id(), "target_info cgroup_id is the server's cgroup");
    let bt = Bpftrace::syscalls_of_cgroup(&format!("redis-{latency}"), id);
    cg.freeze(false);
    go.write_all(b"go\n").unwrap();
    drop(go);
    wait_tcp(port, Duration::from_secs(10));

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
    let reply = redis_cmd(&mut s, &["INFO", "stats"]);
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

fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no user {name}: apt-get install postgresql-15 (it creates the user)"
    );
    // SAFETY: non-null passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// `setpriv` to the postgres user: exec, no fork (unlike su/runuser), so the pid is the server's.
fn as_postgres(bin: &Path) -> Command {
    let mut c = Command::new(need("/usr/bin/setpriv", "util-linux"));
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(bin);
    c
}

#[test]
fn postgres_forks_equal_its_connection_log_and_fsyncs_equal_bpftrace() {
    require_root();
    let bin = Path::new("/usr/lib/postgresql/15/bin");
    let initdb = need(bin.join("initdb").to_str().unwrap(), "postgresql-15");
    let postgres = need(bin.join("postgres").to_str().unwrap(), "postgresql-15");
    let pgbench = need(bin.join("pgbench").to_str().unwrap(), "postgresql-15");
    let pg_isready = need(bin.join("pg_isready").to_str().unwrap(), "postgresql-15");
    let t0 = Instant::now();
    let (uid, gid) = user_ids("postgres");
    let dir = Scratch::new("pg");
    let d = dir.path();
    std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    let data = d.join("data");
    let o = as_postgres(&initdb)
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        .args(["--locale", "C"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let port = free_port().to_string();
    let log = d.join("server.log");
    let cg = TestCgroup::new("pg");
    // One backend process per connection, logged by log_connections; nothing else forks while
    // the window is open: autovacuum off, no parallel workers, no archiver.
    let _pg = Proc(
        cg.spawn(
            as_postgres(&postgres)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port, "-k"])
                .arg(d)
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "log_connections=on", "-c", "autovacuum=off"])
                .args(["-c", "max_parallel_workers_per_gather=0"])
                .args(["-c", "max_parallel_maintenance_workers=0"])
                .args([
                    "-c",
                    "max_parallel_workers=0",
                    "-c",
                    "logging_collector=off",
                ])
                .args(["-c", "shared_buffers=32MB"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        ),
    );
    wait_for("postgres ready", Duration::from_secs(30), || {
        Command::new(&pg_isready)
            .arg("-h")
            .arg(d)
            .args(["-p", &port, "-q"])
            .status()
            .unwrap()
            .success()
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    cg.freeze(true);
    let log_start = std::fs::read_to_string(&log).unwrap().len();
    let pid = _pg.0.id().to_string();
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
    let text = std::fs::read_to_string(&log).unwrap();
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
