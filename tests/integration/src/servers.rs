//! Real database servers as targets (issue 20 and the real-software tests): redis-server, a
//! PostgreSQL 15 cluster and MariaDB, each on a free loopback port (never its default one), in a
//! [`TestCgroup`] of its own, removed with its files on drop; and [`ClientCgroup`], where the
//! target is the client and the server runs outside.
//!
//! Every server also listens on a unix socket in its scratch directory: the tests read their
//! truth (`INFO commandstats`, `pg_stat_statements`, `SHOW GLOBAL STATUS`) through it, and the
//! sidecar's cgroup_skb programs never see unix-socket traffic, so the probing adds nothing to
//! the protocol metrics (it still shows in the server's own counters; the tests say how they
//! leave it out).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use crate::free_port;
use crate::real::{Proc, Scratch, TestCgroup, need, wait_tcp};
use crate::wait_for;

fn ok(what: &str, o: Output) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// uid and gid of a system user a Debian package creates.
pub fn user_ids(name: &str, package: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no user {name}: apt-get install {package} (it creates the user; scripts/setup.sh does)"
    );
    // SAFETY: non-null passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// `setpriv` to `user`: exec, no fork (unlike su/runuser), so the pid is the program's.
pub fn as_user(user: &str, bin: &Path) -> Command {
    let mut c = Command::new(need("/usr/bin/setpriv", "util-linux"));
    c.arg(format!("--reuid={user}"))
        .arg(format!("--regid={user}"))
        .args(["--init-groups", "--"])
        .arg(bin);
    c
}

fn chown_to(p: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// RESP

/// Length of the complete RESP2/RESP3 value at the start of `b`, or None while incomplete.
fn resp_len(b: &[u8]) -> Option<usize> {
    let eol = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..eol]).ok()?;
    let after = eol + 2;
    match b.first()? {
        // Blob string, verbatim string, blob error: length-prefixed (-1: null).
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        // Aggregates: array, set, push, map and attribute (two values per entry).
        t @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
            let n: i64 = head.parse().ok()?;
            let items = if matches!(t, b'%' | b'|') { 2 * n } else { n };
            let mut at = after;
            for _ in 0..items.max(0) {
                at += resp_len(&b[at..])?;
            }
            if *t == b'|' {
                // An attribute precedes the value it describes.
                at += resp_len(&b[at..])?;
            }
            Some(at)
        }
        // One-line values: simple string/error, integer, null, double, boolean, big number.
        _ => Some(after),
    }
}

/// One RESP command on `s` (any stream: TCP or the unix socket); returns the whole reply.
pub fn resp_call<S: Read + Write>(s: &mut S, args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(n) = resp_len(&raw) {
            assert_eq!(n, raw.len(), "one reply per request: {args:?}");
            return raw;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the connection during {args:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// redis

/// redis-server on a free 127.0.0.1 port and a unix socket, no persistence, alone in a test
/// cgroup. Built gated ([`Redis::gated`]): until [`Redis::open`] a shell waits before it execs
/// redis-server, so a test can freeze the cgroup and attach first; [`Redis::start`] opens at once.
pub struct Redis {
    pub port: u16,
    pub socket: PathBuf,
    gate: Option<ChildStdin>,
    proc: Proc,
    pub cgroup: TestCgroup,
    _dir: Scratch,
}

impl Redis {
    pub fn start(tag: &str) -> Self {
        let mut r = Self::gated(tag);
        r.open();
        r
    }

    pub fn gated(tag: &str) -> Self {
        let server = need("redis-server", "redis-server");
        let dir = Scratch::new(&format!("redis-{tag}"));
        let port = free_port();
        let socket = dir.path().join("redis.sock");
        let cgroup = TestCgroup::new(&format!("redis-{tag}"));
        // sh waits for one line before it becomes redis-server: the server's whole life, from
        // its exec, can be inside a test's window.
        let mut child = cgroup.spawn(
            Command::new("/bin/sh")
                .arg("-c")
                .arg("read _ && exec \"$0\" \"$@\"")
                .arg(&server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--unixsocket")
                .arg(&socket)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--logfile", "", "--dir"])
                .arg(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        );
        let gate = child.stdin.take();
        Redis {
            port,
            socket,
            gate,
            proc: Proc(child),
            cgroup,
            _dir: dir,
        }
    }

    /// Let the shell exec redis-server; wait until it accepts connections.
    pub fn open(&mut self) {
        if let Some(mut go) = self.gate.take() {
            go.write_all(b"go\n").unwrap();
        }
        // The unix socket listens from before the event loop starts: no need to try it too.
        wait_tcp(self.port, Duration::from_secs(10));
    }

    /// The server's pid (the shell's before `open`, the same process after its exec).
    pub fn pid(&self) -> String {
        self.proc.0.id().to_string()
    }

    /// One command through the unix socket (invisible to cgroup_skb).
    pub fn local(&self, args: &[&str]) -> Vec<u8> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        resp_call(&mut s, args)
    }

    /// `INFO commandstats` through the unix socket: calls, failed_calls and rejected_calls by
    /// command as redis names them (`get`, `config|get`, …). The INFO itself is in the next
    /// reading, not in this one (redis counts a command after running it).
    pub fn commandstats(&self) -> BTreeMap<String, CommandStat> {
        let text = String::from_utf8(self.local(&["INFO", "commandstats"])).unwrap();
        let mut out = BTreeMap::new();
        for l in text.lines() {
            let Some((name, fields)) = l
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|r| r.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            out.insert(
                name.to_string(),
                CommandStat {
                    calls: field("calls"),
                    failed: field("failed_calls"),
                    rejected: field("rejected_calls"),
                },
            );
        }
        out
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommandStat {
    pub calls: u64,
    pub failed: u64,
    pub rejected: u64,
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL 15

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 program, or fail naming the package.
pub fn pg_bin(name: &str) -> PathBuf {
    need(&format!("{PG_BIN}/{name}"), "postgresql-15")
}

#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// `ssl=on` with a self-signed certificate made by openssl.
    pub ssl: bool,
    /// `shared_preload_libraries=pg_stat_statements`, `pg_stat_statements.track=all`, and the
    /// extension created in database `postgres`.
    pub stat_statements: bool,
    /// More `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// A PostgreSQL 15 cluster made by initdb (trust authentication, user `postgres`) in a scratch
/// directory, its postmaster alone in a test cgroup on a free 127.0.0.1 port and a unix socket
/// in that directory. Nothing forks on its own: autovacuum and parallel workers are off.
pub struct Postgres {
    pub port: u16,
    /// The unix socket's directory (`psql -h DIR`).
    pub socket_dir: PathBuf,
    pub data: PathBuf,
    /// The server's stderr (log_connections is on).
    pub log: PathBuf,
    proc: Proc,
    pub cgroup: TestCgroup,
    _dir: Scratch,
}

impl Postgres {
    pub fn start(tag: &str, opts: &PgOptions) -> Self {
        let initdb = pg_bin("initdb");
        let postgres = pg_bin("postgres");
        let pg_isready = pg_bin("pg_isready");
        let ids = user_ids("postgres", "postgresql-15");
        let dir = Scratch::new(&format!("pg-{tag}"));
        let d = dir.path().to_path_buf();
        chown_to(&d, ids);
        let data = d.join("data");
        ok(
            "initdb",
            as_user("postgres", &initdb)
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .args(["--locale", "C"])
                .output()
                .unwrap(),
        );
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1"),
            ("log_connections", "on"),
            ("autovacuum", "off"),
            ("max_parallel_workers_per_gather", "0"),
            ("max_parallel_maintenance_workers", "0"),
            ("max_parallel_workers", "0"),
            ("logging_collector", "off"),
            ("shared_buffers", "32MB"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if opts.stat_statements {
            settings.push((
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ));
            settings.push(("pg_stat_statements.track".into(), "all".into()));
            settings.push(("pg_stat_statements.track_utility".into(), "on".into()));
        }
        if opts.ssl {
            let (crt, key) = (data.join("server.crt"), data.join("server.key"));
            ok(
                "openssl req (self-signed certificate)",
                Command::new(need("openssl", "openssl"))
                    .args(["req", "-new", "-x509", "-days", "2", "-nodes"])
                    .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                    .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&crt)
                    .output()
                    .unwrap(),
            );
            for f in [&crt, &key] {
                chown_to(f, ids);
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            settings.push(("ssl".into(), "on".into()));
        }
        settings.extend(opts.settings.iter().cloned());
        let port = free_port();
        let log = d.join("server.log");
        let cgroup = TestCgroup::new(&format!("pg-{tag}"));
        let mut cmd = as_user("postgres", &postgres);
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&d);
        for (k, v) in &settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let proc = Proc(
            cgroup.spawn(
                cmd.stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap()),
            ),
        );
        let mut pg = Postgres {
            port,
            socket_dir: d.clone(),
            data,
            log,
            proc,
            cgroup,
            _dir: dir,
        };
        wait_for("postgres ready", Duration::from_secs(30), || {
            if let Ok(Some(st)) = pg.proc.0.try_wait() {
                panic!(
                    "postgres exited ({st}):\n{}",
                    std::fs::read_to_string(&pg.log).unwrap_or_default()
                );
            }
            Command::new(&pg_isready)
                .arg("-h")
                .arg(&pg.socket_dir)
                .args(["-p", &port.to_string(), "-q"])
                .status()
                .unwrap()
                .success()
                .then_some(())
        });
        if opts.stat_statements {
            pg.local("postgres", "CREATE EXTENSION pg_stat_statements");
        }
        pg
    }

    pub fn pid(&self) -> String {
        self.proc.0.id().to_string()
    }

    /// `psql -X -A -t` through the unix socket (invisible to cgroup_skb): the output.
    pub fn local(&self, db: &str, sql: &str) -> String {
        ok(
            &format!("psql (unix socket) {sql}"),
            Command::new(pg_bin("psql"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .output()
                .unwrap(),
        )
    }

    /// A libpq connection string to this server over TCP (what the sidecar sees).
    pub fn conninfo(&self, db: &str, sslmode: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} sslmode={sslmode} gssencmode=disable",
            self.port
        )
    }

    /// `pg_stat_statements` calls of database `db` by normalised query text (statements of
    /// every user; read from database `postgres`, so the reading itself is never in them).
    pub fn statement_calls(&self, db: &str) -> BTreeMap<String, u64> {
        let out = self.local(
            "postgres",
            &format!(
                "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements \
                 s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{db}'"
            ),
        );
        let mut m = BTreeMap::new();
        for l in out.lines().filter(|l| !l.is_empty()) {
            let (calls, q) = l.split_once('|').unwrap();
            *m.entry(q.to_string()).or_default() += calls.parse::<u64>().unwrap();
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// MariaDB

/// MariaDB (`mariadb-install-db` into a scratch directory, `mariadbd` as user mysql) alone in a
/// test cgroup, on a free 127.0.0.1 port and a unix socket; `--skip-grant-tables`, so `root`
/// with no password connects over TCP; no SSL, no binary log, a small buffer pool: it starts
/// in about a second.
pub struct MariaDb {
    pub port: u16,
    pub socket: PathBuf,
    pub log: PathBuf,
    proc: Proc,
    pub cgroup: TestCgroup,
    _dir: Scratch,
}

impl MariaDb {
    pub fn start(tag: &str) -> Self {
        let install = need("mariadb-install-db", "mariadb-server");
        let server = need("/usr/sbin/mariadbd", "mariadb-server");
        need("mariadb", "mariadb-client");
        let ids = user_ids("mysql", "mariadb-server");
        let dir = Scratch::new(&format!("mariadb-{tag}"));
        let d = dir.path().to_path_buf();
        chown_to(&d, ids);
        let data = d.join("data");
        ok(
            "mariadb-install-db",
            Command::new(install)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--user=mysql", "--skip-test-db"])
                .args(["--auth-root-authentication-method=normal"])
                .output()
                .unwrap(),
        );
        let port = free_port();
        let socket = d.join("mysqld.sock");
        let log = d.join("error.log");
        let cgroup = TestCgroup::new(&format!("mariadb-{tag}"));
        let proc = Proc(
            cgroup.spawn(
                as_user("mysql", &server)
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", data.display()))
                    .arg(format!("--socket={}", socket.display()))
                    .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
                    .arg(format!("--log-error={}", log.display()))
                    .arg(format!("--port={port}"))
                    .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
                    .args(["--skip-grant-tables", "--skip-ssl", "--skip-log-bin"])
                    .args(["--innodb-buffer-pool-size=32M", "--performance-schema=OFF"])
                    .args(["--innodb-flush-log-at-trx-commit=2"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            ),
        );
        let mut m = MariaDb {
            port,
            socket,
            log,
            proc,
            cgroup,
            _dir: dir,
        };
        wait_for("mariadbd ready", Duration::from_secs(30), || {
            if let Ok(Some(st)) = m.proc.0.try_wait() {
                panic!(
                    "mariadbd exited ({st}):\n{}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            (m.socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                .then_some(())
        });
        m
    }

    pub fn pid(&self) -> String {
        self.proc.0.id().to_string()
    }

    /// The mariadb client through the unix socket (invisible to cgroup_skb), batch output
    /// without column names.
    pub fn local(&self, sql: &str) -> String {
        ok(
            &format!("mariadb (unix socket) {sql}"),
            Command::new("mariadb")
                .arg(format!("--socket={}", self.socket.display()))
                .args(["-uroot", "-N", "-B", "-e", sql])
                .output()
                .unwrap(),
        )
    }

    /// `SHOW GLOBAL STATUS LIKE 'Com\_%'` through the unix socket. Each reading adds 1 to
    /// `Com_show_status` (its own, included).
    pub fn com_status(&self) -> BTreeMap<String, u64> {
        self.local("SHOW GLOBAL STATUS LIKE 'Com\\_%'")
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('\t')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The target as client

/// A test cgroup for clients: a `sleep` holds it as the sidecar's `--target-pid` while clients
/// come and go; [`ClientCgroup::run`] runs one client inside it (the server stays outside).
pub struct ClientCgroup {
    holder: Proc,
    pub cgroup: TestCgroup,
}

impl ClientCgroup {
    pub fn new(tag: &str) -> Self {
        let cgroup = TestCgroup::new(&format!("client-{tag}"));
        let holder = Proc(cgroup.spawn(Command::new("sleep").arg("infinity")));
        ClientCgroup { holder, cgroup }
    }

    /// The holder's pid: `--target-pid` for the sidecar.
    pub fn pid(&self) -> String {
        self.holder.0.id().to_string()
    }

    /// Run `cmd` inside the cgroup (its sockets are the cgroup's) with `input` on its stdin;
    /// wait for it.
    pub fn output(&self, cmd: &mut Command, input: &[u8]) -> Output {
        let mut child = self.cgroup.spawn(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// [`ClientCgroup::output`] with no input, for a command that must succeed: its stdout.
    pub fn run(&self, cmd: &mut Command) -> String {
        let o = self.output(cmd, b"");
        ok(&format!("{cmd:?} in the client cgroup"), o)
    }
}
