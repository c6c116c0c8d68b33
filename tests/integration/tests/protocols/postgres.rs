//! PostgreSQL 15: queries by kind equal `pg_stat_statements` calls deltas (its normalised texts
//! classified as the contract classifies statements) plus the statements that failed, which
//! pg_stat_statements never records (it counts at the end of execution) while the sidecar
//! counts every answered one; errors by SQLSTATE class exact; TLS connections counted, not
//! parsed.
//!
//! Ground truth details: pg_stat_statements is read from database `postgres` and filtered on
//! the workload's database `work`, so its own readings are never in the truth. It sees what
//! pgbench sends besides its transactions (`-i`: DROP/CREATE TABLE, TRUNCATE, COPY … FROM STDIN,
//! VACUUM ANALYZE, ALTER TABLE … ADD PRIMARY KEY in BEGIN/COMMIT; a run: its table and
//! partitioning checks, SELECTs), so the comparison is per kind over each whole phase. pgbench's
//! transaction ends with `END` (kind COMMIT). Each phase is compared on its own, so a
//! difference names the phase (init, simple, extended, prepared, psql). With `-M prepared`,
//! pg_stat_statements 15 counts BEGIN and END (utility statements of named prepared
//! statements) once per connection, not per execution: there pgbench's transaction count is
//! the truth for those two kinds.

use super::*;

/// The workload's database.
const DB: &str = "work";
/// Transactions per pgbench client.
const T: &str = "150";

const QUERIES: &str = "ebpf_sidecar_postgres_queries_total";
const ERRORS: &str = "ebpf_sidecar_postgres_errors_total";
const DURATION_COUNT: &str = "ebpf_sidecar_postgres_query_duration_seconds_count";
const TLS: &str = "ebpf_sidecar_postgres_tls_connections_total";

fn series(m: &Metrics, name: &str, direction: &str, key: &str) -> Counts {
    by_labels(m, name, &[("direction", direction)], &[key])
}

fn server_series(m: &Metrics, name: &str, key: &str) -> Counts {
    series(m, name, "server", key)
}

/// Where the workload runs: the target is the server (clients run from the test) or the
/// client (clients run in `cc`, the server outside).
struct Window<'a> {
    pg: &'a Postgres,
    sc: &'a Sidecar,
    direction: &'static str,
    cc: Option<&'a ClientCgroup>,
}

impl Window<'_> {
    /// Run `work` (a phase of the workload) and compare: queries by kind = pg_stat_statements'
    /// calls classified + `failed` (kind → statements that failed), except the kinds `work`
    /// returns, counted by the workload itself; errors by class = `errors`; the duration
    /// histogram's count = the queries, by kind; nothing in the other direction.
    fn phase(
        &self,
        name: &str,
        failed: &[(&str, u64)],
        errors: &[(&str, u64)],
        work: impl FnOnce() -> Counts,
    ) {
        let (pg, sc, dir) = (self.pg, self.sc, self.direction);
        let truth_before = pg.statement_calls(DB);
        let before = sc.scrape();
        let own = work();
        let truth_after = pg.statement_calls(DB);
        let mut truth = Counts::new();
        for (q, c) in &truth_after {
            let d = c - truth_before.get(q).copied().unwrap_or(0);
            *truth.entry(sql_kind(q).to_string()).or_default() += d;
        }
        for (kind, n) in failed {
            *truth.entry(kind.to_string()).or_default() += n;
        }
        truth.extend(own);
        let truth = by_kind(&truth);
        let d = [("direction", dir)];
        let want = before.sum(QUERIES, &d) as u64 + truth.values().sum::<u64>();
        let m = scrape_when(sc, QUERIES, &d, want);
        let got = delta(
            &series(&m, QUERIES, dir, "kind"),
            &series(&before, QUERIES, dir, "kind"),
        );
        eprintln!(
            "postgres {dir} {name}: sidecar {got:?}; pg_stat_statements (+failed) {truth:?}; \
             errors by class {:?}; untracked {:?}",
            delta(
                &series(&m, ERRORS, dir, "sqlstate_class"),
                &series(&before, ERRORS, dir, "sqlstate_class"),
            ),
            untracked(&m)
        );
        assert_counts_eq(
            &format!(
                "postgres {name}: queries_total{{direction={dir}}} by kind vs pg_stat_statements + failed"
            ),
            &by_kind(&got),
            &truth,
        );
        let errors: Counts = errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_counts_eq(
            &format!("postgres {name}: errors_total{{direction={dir}}} by sqlstate_class"),
            &delta(
                &series(&m, ERRORS, dir, "sqlstate_class"),
                &series(&before, ERRORS, dir, "sqlstate_class"),
            ),
            &errors,
        );
        assert_counts_eq(
            &format!(
                "postgres {name}: query_duration_seconds_count{{direction={dir}}} by kind vs queries_total"
            ),
            &delta(
                &series(&m, DURATION_COUNT, dir, "kind"),
                &series(&before, DURATION_COUNT, dir, "kind"),
            ),
            &got,
        );
        let other = opposite(dir);
        for name in [QUERIES, ERRORS] {
            assert_eq!(
                m.sum(name, &[("direction", other)]),
                0.0,
                "{name}{{direction={other}}}"
            );
        }
        assert_all_tracked(&m, &format!("postgres {dir} {name}"));
    }

    /// Run pgbench; the transactions it reports processed.
    fn pgbench(&self, args: &[&str]) -> u64 {
        let o = client_output(
            self.cc,
            Command::new(pg_bin("pgbench"))
                .args(args)
                .arg(self.pg.conninfo(DB, "disable")),
            b"",
        );
        assert!(
            o.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        out.lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// pgbench in each query mode, a phase each.
    fn pgbench_modes(&self, modes: &[&str]) {
        for mode in modes {
            self.phase(&format!("pgbench -M {mode}"), &[], &[], || {
                let t = self.pgbench(&["-n", "-M", mode, "-c", "2", "-j", "1", "-t", T]);
                assert_eq!(
                    t,
                    2 * T.parse::<u64>().unwrap(),
                    "pgbench -M {mode} transactions"
                );
                if *mode != "prepared" {
                    return Counts::new();
                }
                // pg_stat_statements (15) counts a utility statement of a named prepared
                // statement once per connection, not per execution: BEGIN and END are 2
                // there, not one per transaction. pgbench's own count is their truth.
                Counts::from([("BEGIN".to_string(), t), ("COMMIT".to_string(), t)])
            });
        }
    }

    /// `psql -c SQL`: psql sends the string as it is, one Query message.
    fn psql_c(&self, sql: &str) -> String {
        let o = client_output(
            self.cc,
            Command::new(pg_bin("psql"))
                .arg(self.pg.conninfo(DB, "disable"))
                .args(["-X", "-q", "-c", sql]),
            b"",
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// One Query message holding several statements: pg_stat_statements records each.
    fn multi_statements(&self) {
        self.phase("multi-statement Query", &[], &[], || {
            let err = self.psql_c(
                "BEGIN; SELECT 1; INSERT INTO pgbench_history (tid, bid, aid, delta) \
                 VALUES (1, 1, 1, 0); UPDATE pgbench_branches SET bbalance = bbalance \
                 WHERE bid = 1; DELETE FROM pgbench_history WHERE tid = -1; COMMIT",
            );
            assert!(err.is_empty(), "{err}");
            Counts::new()
        });
    }

    /// The psql script of failing and succeeding statements, with its errors.
    fn psql_errors(&self) {
        let script = self.pg.data.join("../errors.sql");
        std::fs::write(&script, PSQL_SCRIPT).unwrap();
        self.phase(
            "psql errors",
            &[("other", 1), ("SELECT", 4), ("INSERT", 1)],
            &[("42", 3), ("22", 2), ("23", 1)],
            || {
                let o = client_output(
                    self.cc,
                    Command::new(pg_bin("psql"))
                        .arg(self.pg.conninfo(DB, "disable"))
                        .args(["-X", "-q", "-f"])
                        .arg(&script),
                    b"",
                );
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(err.matches("ERROR:").count(), 6, "psql: {err}");
                Counts::new()
            },
        );
    }
}

/// The psql phase: statements that fail (kind, SQLSTATE) among ones that do not, and the
/// transaction keywords in all their spellings. psql -f sends one Query message per statement.
const PSQL_SCRIPT: &str = "\
SELEC 1;
SELECT * FROM WHERE;
SELECT * FROM no_such_table;
SELECT 1/0;
INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0);
SELECT count(*) FROM pgbench_branches;
BEGIN;
SELECT 1/0;
COMMIT;
START TRANSACTION;
UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1;
ABORT;
BEGIN;
DELETE FROM pgbench_history WHERE tid = -1;
END;
BEGIN;
INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 0);
ROLLBACK;
";
// Failed: SELEC (42601, other); FROM WHERE (42601), no_such_table (42P01), two 1/0 (22012):
// SELECT; the duplicate branch (23505): INSERT. The COMMIT of the failed transaction is
// answered `ROLLBACK` but is a COMMIT statement (pg_stat_statements records it as such).

#[test]
fn postgres_server_queries_equal_pg_stat_statements_and_errors_by_class() {
    require_root();
    let pg = Postgres::start(
        "proto",
        &PgOptions {
            stat_statements: true,
            ..Default::default()
        },
    );
    pg.local("postgres", &format!("CREATE DATABASE {DB}"));
    let sc = sidecar(&pg.pid(), &[]);
    let w = Window {
        pg: &pg,
        sc: &sc,
        direction: "server",
        cc: None,
    };
    // Server-side data generation (`G`: INSERT … SELECT generate_series): no COPY, which
    // `postgres_pgbench_init_with_copy_equals_pg_stat_statements` covers.
    w.phase("pgbench -i -I dtGvp", &[], &[], || {
        w.pgbench(&["-i", "-I", "dtGvp", "-s", "1", "-q"]);
        Counts::new()
    });
    w.pgbench_modes(&["simple", "extended", "prepared"]);
    w.psql_errors();
    w.multi_statements();
    assert_eq!(
        sc.scrape().sum(TLS, &[]),
        0.0,
        "no connection asked for TLS"
    );
}

/// The target as client: pgbench and psql run in a client cgroup, the server outside; the same
/// phases, the same truth, direction `client`.
#[test]
fn postgres_client_queries_equal_pg_stat_statements_and_errors_by_class() {
    require_root();
    let pg = Postgres::start(
        "proto-for-client",
        &PgOptions {
            stat_statements: true,
            ..Default::default()
        },
    );
    pg.local("postgres", &format!("CREATE DATABASE {DB}"));
    let cc = ClientCgroup::new("pg");
    let sc = sidecar(&cc.pid(), &[]);
    let w = Window {
        pg: &pg,
        sc: &sc,
        direction: "client",
        cc: Some(&cc),
    };
    w.phase("pgbench -i -I dtGvp", &[], &[], || {
        w.pgbench(&["-i", "-I", "dtGvp", "-s", "1", "-q"]);
        Counts::new()
    });
    w.pgbench_modes(&["simple", "extended", "prepared"]);
    w.psql_errors();
    w.multi_statements();
}

/// One Query message whose second statement fails (`SELECT 1; SELECT 1/0; SELECT 2`): the
/// first is answered (SELECT, by the text), the second fails, the third is never run nor
/// answered. A statement after the first is known by its command tag, and an ErrorResponse has
/// none: the failed one is `other` (docs/families/net.md), never a guess. pgbench tables are not
/// needed.
#[test]
fn postgres_multi_statement_query_failing_statement_counts_as_other() {
    require_root();
    let pg = Postgres::start(
        "proto-multi",
        &PgOptions {
            stat_statements: true,
            ..Default::default()
        },
    );
    pg.local("postgres", &format!("CREATE DATABASE {DB}"));
    let sc = sidecar(&pg.pid(), &[]);
    let w = Window {
        pg: &pg,
        sc: &sc,
        direction: "server",
        cc: None,
    };
    w.phase(
        "multi-statement Query, second statement fails",
        &[("other", 1)],
        &[("22", 1)],
        || {
            let err = w.psql_c("SELECT 1; SELECT 1/0; SELECT 2");
            assert!(err.contains("division by zero"), "{err}");
            Counts::new()
        },
    );
}

/// pgbench's default initialisation fills pgbench_accounts with `COPY … FROM STDIN` (the copy-in
/// sub-protocol: CopyInResponse, CopyData…, CopyDone) and goes on with COMMIT, VACUUM and ALTER
/// TABLE on the same connection: all of it is in pg_stat_statements.
#[test]
fn postgres_pgbench_init_with_copy_equals_pg_stat_statements() {
    require_root();
    let pg = Postgres::start(
        "proto-copy",
        &PgOptions {
            stat_statements: true,
            ..Default::default()
        },
    );
    pg.local("postgres", &format!("CREATE DATABASE {DB}"));
    let sc = sidecar(&pg.pid(), &[]);
    let w = Window {
        pg: &pg,
        sc: &sc,
        direction: "server",
        cc: None,
    };
    w.phase(
        "pgbench -i (client-side generation, COPY)",
        &[],
        &[],
        || {
            w.pgbench(&["-i", "-s", "1", "-q"]);
            Counts::new()
        },
    );
}

/// Lines of the server log since `from` that log an authorised connection with TLS
/// (log_connections: "connection authorized: … SSL enabled (protocol=…").
fn tls_connections_logged(pg: &Postgres, from: usize) -> (u64, u64) {
    let text = std::fs::read_to_string(&pg.log).unwrap();
    let auth: Vec<&str> = text[from..]
        .lines()
        .filter(|l| l.contains("connection authorized:"))
        .collect();
    let tls = auth.iter().filter(|l| l.contains("SSL enabled")).count() as u64;
    (tls, auth.len() as u64 - tls)
}

fn psql(pg: &Postgres, sslmode: &str, statements: &[&str]) {
    let mut c = Command::new(pg_bin("psql"));
    c.arg(pg.conninfo("postgres", sslmode)).args(["-X", "-q"]);
    for s in statements {
        c.args(["-c", s]);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "psql sslmode={sslmode}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn postgres_tls_connections_are_counted_and_not_parsed() {
    require_root();
    let pg = Postgres::start(
        "tls",
        &PgOptions {
            ssl: true,
            ..Default::default()
        },
    );
    let from = std::fs::read_to_string(&pg.log).unwrap().len();
    let sc = sidecar(&pg.pid(), &[]);
    // SSLRequest answered `S`, then TLS: counted once per connection, the queries inside unseen.
    for _ in 0..3 {
        psql(&pg, "require", &["SELECT 1", "SELECT 2"]);
    }
    // Plaintext to the same server still parsed.
    psql(&pg, "disable", &["SELECT 1", "BEGIN", "SELECT 2", "COMMIT"]);
    let m = scrape_when(&sc, QUERIES, &[("direction", "server")], 4);
    let (tls, plain) = tls_connections_logged(&pg, from);
    assert_eq!(
        (tls, plain),
        (3, 1),
        "the server's log: TLS and plain connections"
    );
    assert_eq!(
        m.sum(TLS, &[("direction", "server")]) as u64,
        tls,
        "tls_connections_total"
    );
    assert_eq!(m.sum(TLS, &[("direction", "client")]), 0.0);
    assert_eq!(
        by_kind(&server_series(&m, QUERIES, "kind")),
        by_kind(&Counts::from([
            ("SELECT".to_string(), 2),
            ("BEGIN".to_string(), 1),
            ("COMMIT".to_string(), 1)
        ])),
        "only the plaintext connection's queries"
    );
    assert_eq!(m.sum(ERRORS, &[]), 0.0);
    assert_all_tracked(&m, "postgres TLS");
}

#[test]
fn postgres_ssl_refused_then_plaintext_queries_are_counted() {
    require_root();
    let pg = Postgres::start("no-ssl", &PgOptions::default());
    let from = std::fs::read_to_string(&pg.log).unwrap().len();
    let sc = sidecar(&pg.pid(), &[]);
    // libpq's sslmode=prefer sends SSLRequest first; ssl=off answers `N`; the startup message
    // and the queries follow in plaintext on the same connection.
    for _ in 0..2 {
        psql(
            &pg,
            "prefer",
            &[
                "SELECT 1",
                "UPDATE pg_class SET relname = relname WHERE false",
            ],
        );
    }
    let m = scrape_when(&sc, QUERIES, &[("direction", "server")], 4);
    assert_eq!(
        tls_connections_logged(&pg, from),
        (0, 2),
        "the server's log"
    );
    assert_eq!(m.sum(TLS, &[]), 0.0, "`N` is no TLS connection");
    assert_eq!(
        by_kind(&server_series(&m, QUERIES, "kind")),
        by_kind(&Counts::from([
            ("SELECT".to_string(), 2),
            ("UPDATE".to_string(), 2)
        ]))
    );
    assert_all_tracked(&m, "postgres sslmode=prefer, ssl=off");
}
