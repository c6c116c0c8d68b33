//! MariaDB 10.11: queries by kind equal the `Com_%` status deltas, errors by MySQL error number
//! exact, for COM_QUERY (the mariadb client) and COM_STMT_EXECUTE of statements prepared with
//! COM_STMT_PREPARE (mysql-connector-python, `prepared=True`).
//!
//! Ground truth details, checked against this MariaDB:
//! - a prepared statement's execution bumps `Com_stmt_execute` AND the statement's own counter
//!   (`Com_select`, `Com_update`, …); its preparation bumps only `Com_stmt_prepare`. So the kind
//!   counters alone are the truth for COM_QUERY and COM_STMT_EXECUTE together.
//! - `Com_<kind>` is bumped before execution: a SELECT of a missing table (1146) or a duplicate
//!   INSERT (1062) is in it. A syntax error (1064) never reaches it: those are added by hand.
//! - `INSERT … SELECT` is `Com_insert_select`, `START TRANSACTION` is `Com_begin`.
//! - mysql-connector-python sends two SETs at connect (`Com_set_option`, kind other),
//!   COM_STMT_RESET before every execution and COM_STMT_CLOSE on a new statement
//!   (`Com_stmt_reset`, `Com_stmt_close`), and two commands counted in `Com_admin_commands`:
//!   none of those but the SETs is a query.
//! - The mariadb client in batch mode sends nothing but the statements.

use std::collections::BTreeMap;

use super::*;

const QUERIES: &str = "ebpf_sidecar_mysql_queries_total";
const ERRORS: &str = "ebpf_sidecar_mysql_errors_total";
const DURATION_COUNT: &str = "ebpf_sidecar_mysql_query_duration_seconds_count";

/// Executions of each prepared statement.
const N: u64 = 40;

/// The kind a `Com_` status counter counts, None for the ones that are no query (COM_STMT_*,
/// COM_PING & co, COM_INIT_DB) and for `Com_show_status`, the test's own readings through the
/// unix socket.
fn com_kind(name: &str) -> Option<&'static str> {
    match name {
        "Com_select" => Some("SELECT"),
        "Com_insert" | "Com_insert_select" => Some("INSERT"),
        "Com_update" | "Com_update_multi" => Some("UPDATE"),
        "Com_delete" | "Com_delete_multi" => Some("DELETE"),
        "Com_begin" => Some("BEGIN"),
        "Com_commit" => Some("COMMIT"),
        "Com_rollback" => Some("ROLLBACK"),
        n if n.starts_with("Com_stmt_")
            || matches!(
                n,
                "Com_admin_commands" | "Com_change_db" | "Com_show_status"
            ) =>
        {
            None
        }
        _ => Some("other"),
    }
}

fn series(m: &Metrics, name: &str, direction: &str, key: &str) -> Counts {
    by_labels(m, name, &[("direction", direction)], &[key])
}

/// Run `work` and compare: queries by kind = `Com_` deltas by kind + `syntax_errors` (kind →
/// statements refused by the parser); errors by code = `errors`; histogram count = queries.
/// Returns the `Com_` deltas.
fn phase(
    db: &MariaDb,
    sc: &Sidecar,
    dir: &str,
    name: &str,
    syntax_errors: &[(&str, u64)],
    errors: &[(&str, u64)],
    work: impl FnOnce(),
) -> BTreeMap<String, u64> {
    let com_before = db.com_status();
    let before = sc.scrape();
    work();
    let com_after = db.com_status();
    let mut com = BTreeMap::new();
    let mut truth = Counts::new();
    for (k, v) in &com_after {
        let d = v - com_before.get(k).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        com.insert(k.clone(), d);
        if let Some(kind) = com_kind(k) {
            *truth.entry(kind.to_string()).or_default() += d;
        }
    }
    for (kind, n) in syntax_errors {
        *truth.entry(kind.to_string()).or_default() += n;
    }
    let truth = by_kind(&truth);
    let d = [("direction", dir)];
    let want = before.sum(QUERIES, &d) as u64 + truth.values().sum::<u64>();
    let m = scrape_when(sc, QUERIES, &d, want);
    let got = delta(
        &series(&m, QUERIES, dir, "kind"),
        &series(&before, QUERIES, dir, "kind"),
    );
    eprintln!(
        "mariadb {dir} {name}: sidecar {got:?}; Com_ deltas {com:?}; errors by code {:?}; \
         untracked {:?}",
        delta(
            &series(&m, ERRORS, dir, "code"),
            &series(&before, ERRORS, dir, "code"),
        ),
        untracked(&m)
    );
    assert_counts_eq(
        &format!("mariadb {name}: mysql_queries_total{{direction={dir}}} by kind vs Com_ deltas"),
        &by_kind(&got),
        &truth,
    );
    let errors: Counts = errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_counts_eq(
        &format!("mariadb {name}: mysql_errors_total{{direction={dir}}} by code"),
        &delta(
            &series(&m, ERRORS, dir, "code"),
            &series(&before, ERRORS, dir, "code"),
        ),
        &errors,
    );
    assert_counts_eq(
        &format!("mariadb {name}: query_duration_seconds_count by kind vs queries_total"),
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
    assert_all_tracked(&m, &format!("mariadb {dir} {name}"));
    com
}

/// One statement a line, run by `mariadb --force` (on after an error) over TCP: COM_QUERY.
const BATCH: &str = "\
SELECT COUNT(*) FROM t;
SELECT v FROM t WHERE id = 1;
INSERT INTO t VALUES (100, 0);
INSERT INTO t VALUES (100, 0);
INSERT INTO t SELECT id + 200, v FROM t WHERE id < 5;
UPDATE t SET v = v + 1 WHERE id < 10;
DELETE FROM t WHERE id = 100;
BEGIN;
UPDATE t SET v = 0 WHERE id = 1;
COMMIT;
START TRANSACTION;
DELETE FROM t WHERE id = 2;
ROLLBACK;
SELECT * FROM no_such_table;
selec 1;
SELECT FROM WHERE;
SET @x = 1;
SHOW TABLES;
";
// Errors: the second INSERT 1062 (in Com_insert), no_such_table 1146 (in Com_select), `selec`
// (other) and `SELECT FROM WHERE` (SELECT) 1064, in no Com_ counter.

/// mysql-connector-python, pure Python, binary protocol: every statement prepared
/// (COM_STMT_PREPARE) and executed N times (COM_STMT_EXECUTE), one duplicate INSERT (1062).
const PREPARED_PY: &str = r#"
import sys
try:
    import mysql.connector
except ImportError:
    sys.exit("mysql-connector-python missing: pip3 install mysql-connector-python==8.4.0 "
             "(scripts/setup.sh installs it)")
port, n = int(sys.argv[1]), int(sys.argv[2])
c = mysql.connector.connect(host="127.0.0.1", port=port, user="root", database="w",
                            use_pure=True, autocommit=True, ssl_disabled=True, compress=False)
cur = c.cursor(prepared=True)
for i in range(n):
    cur.execute("SELECT v FROM t WHERE id = %s", (i % 20,))
    cur.fetchall()
for i in range(n):
    cur.execute("UPDATE t SET v = v + 1 WHERE id = %s", (i % 20,))
for i in range(n):
    cur.execute("INSERT INTO t (id, v) VALUES (%s, 0)", (1000 + i,))
try:
    cur.execute("INSERT INTO t (id, v) VALUES (%s, 0)", (1000,))
    sys.exit("the duplicate INSERT succeeded")
except mysql.connector.Error as e:
    assert e.errno == 1062, e
for i in range(n):
    cur.execute("DELETE FROM t WHERE id = %s", (1000 + i,))
c.close()
print("ok")
"#;

#[test]
fn mariadb_server_queries_equal_com_counters_and_errors_by_code() {
    require_root();
    let db = MariaDb::start("proto");
    create_table(&db);
    let sc = sidecar(&db.pid(), &[]);
    workload(&db, &sc, "server", None);
}

/// The target as client: the mariadb client and the connector run in a client cgroup, the
/// server outside; the same phases, the same truth, direction `client`.
#[test]
fn mariadb_client_queries_equal_com_counters_and_errors_by_code() {
    require_root();
    let db = MariaDb::start("proto-for-client");
    create_table(&db);
    let cc = ClientCgroup::new("mysql");
    let sc = sidecar(&cc.pid(), &[]);
    workload(&db, &sc, "client", Some(&cc));
}

/// Database `w`, table `t` with ids 1..=20, made through the unix socket.
fn create_table(db: &MariaDb) {
    let rows: Vec<String> = (1..=20).map(|i| format!("({i}, 0)")).collect();
    db.local(&format!(
        "CREATE DATABASE w; CREATE TABLE w.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO w.t VALUES {}",
        rows.join(", ")
    ));
}

/// The two phases: COM_QUERY from the mariadb client, COM_STMT_EXECUTE from the connector.
fn workload(db: &MariaDb, sc: &Sidecar, dir: &str, cc: Option<&ClientCgroup>) {
    let port = db.port.to_string();
    phase(
        db,
        sc,
        dir,
        "mariadb client (COM_QUERY)",
        &[("other", 1), ("SELECT", 1)],
        &[("1062", 1), ("1146", 1), ("1064", 2)],
        || {
            let o = client_output(
                cc,
                Command::new(need("mariadb", "mariadb-client"))
                    .args(["-h", "127.0.0.1", "-P", &port, "-uroot", "-D", "w"])
                    .args(["--force", "--skip-ssl", "--batch"]),
                BATCH.as_bytes(),
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.matches("ERROR ").count(), 4, "mariadb: {err}");
        },
    );

    let scratch = Scratch::new(&format!("mysql-prepared-{dir}"));
    let script = scratch.path().join("prepared.py");
    std::fs::write(&script, PREPARED_PY).unwrap();
    let com = phase(
        db,
        sc,
        dir,
        "prepared statements (COM_STMT_EXECUTE)",
        &[],
        &[("1062", 1)],
        || {
            let o = client_output(
                cc,
                Command::new(python3())
                    .arg(&script)
                    .args([&port, &N.to_string()]),
                b"",
            );
            assert!(
                o.status.success(),
                "{}: {}",
                script.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        },
    );
    // The truth's own check: every execution is in Com_stmt_execute and in its kind's counter.
    assert_eq!(
        com.get("Com_stmt_execute").copied(),
        Some(4 * N + 1),
        "{com:?}"
    );
    assert_eq!(com.get("Com_select").copied(), Some(N), "{com:?}");
    assert_eq!(com.get("Com_insert").copied(), Some(N + 1), "{com:?}");
}
