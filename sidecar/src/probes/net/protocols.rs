//! Redis, PostgreSQL and MySQL requests, recognised by content in the target's TCP segments and
//! paired with their answers by the kernel (`net_proto.bpf.h` and the parser of each protocol;
//! docs/families/net.md says what is and is not parsed). Redis command names and MySQL error
//! numbers are bounded by --top-n here; kinds and SQLSTATE classes are bounded by construction.

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{self as k, ProtoKey};
use sidecar_ebpf::{HIST_BUCKETS, SyscallStats};

use super::{Object, percpu_slots};
use crate::metrics::{self, LabelBudget, Labels, Log2Histogram, Metric};
use crate::probes::object::Maps;

pub const REDIS_COMMANDS: Metric = Metric::counter(
    "ebpf_sidecar_redis_commands",
    "Redis commands of the target answered (RESP2/3, recognised by content on any port; pipelined commands paired with their replies in order), by direction (server: the target answers; client: it asks) and command (lower case, as INFO commandstats names it).",
)
.labels(&["direction", "command"])
.top_n(&["command"]);
pub const REDIS_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_redis_errors",
    "Redis commands of the target answered with an error reply (-ERR, -WRONGTYPE, …), by direction and command.",
)
.labels(&["direction", "command"])
.top_n(&["command"]);
pub const REDIS_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_redis_command_duration_seconds",
    "Time from a Redis command's first byte to its reply's first byte, seen at the target's sockets.",
)
.labels(&["direction"]);
pub const POSTGRES_QUERIES: Metric = Metric::counter(
    "ebpf_sidecar_postgres_queries",
    "PostgreSQL statements of the target answered, successful or not (simple Query statements and extended-protocol Executes), by direction and kind (the statement's first word: SELECT, INSERT, UPDATE, DELETE, BEGIN, COMMIT, ROLLBACK, other).",
)
.labels(&["direction", "kind"]);
pub const POSTGRES_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_postgres_errors",
    "PostgreSQL ErrorResponses sent to or received by the target, by direction and SQLSTATE class (its first two characters).",
)
.labels(&["direction", "sqlstate_class"]);
pub const POSTGRES_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_postgres_query_duration_seconds",
    "Time from a PostgreSQL query (or the previous statement's completion in a multi-statement query) to its CommandComplete or ErrorResponse.",
)
.labels(&["direction", "kind"]);
pub const POSTGRES_TLS: Metric = Metric::counter(
    "ebpf_sidecar_postgres_tls_connections",
    "PostgreSQL connections of the target that switched to TLS (SSLRequest answered S); their queries are not parsed.",
)
.labels(&["direction"]);
pub const MYSQL_QUERIES: Metric = Metric::counter(
    "ebpf_sidecar_mysql_queries",
    "MySQL/MariaDB queries of the target answered, successful or not (COM_QUERY, and COM_STMT_EXECUTE with the kind of its prepared statement), by direction and kind.",
)
.labels(&["direction", "kind"]);
pub const MYSQL_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_mysql_errors",
    "MySQL/MariaDB ERR packets answering the target's commands (or login), by direction and error number.",
)
.labels(&["direction", "code"])
.top_n(&["code"]);
pub const MYSQL_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_mysql_query_duration_seconds",
    "Time from a MySQL query's command packet to the first packet of its answer.",
)
.labels(&["direction", "kind"]);
pub const UNTRACKED: Metric = Metric::counter(
    "ebpf_sidecar_protocol_untracked_streams",
    "Redis, PostgreSQL and MySQL connections of the target the recogniser stopped following (counted once each; their requests from then on are not counted), by protocol and reason: gap (bytes never seen where a header was due), head (not a header of the protocol where one was due, or longer than followed), steps (more than 8192 messages in one segment), pipeline (more than 32 requests waiting, an answer without a request), midstream (already carrying data when first seen), unsupported (PostgreSQL replication, MySQL compression or TLS, nesting deeper than 8).",
)
.labels(&["protocol", "reason"]);

/// Every metric of this module, in the order `encode` writes them.
pub const METRICS: [Metric; 11] = [
    REDIS_COMMANDS,
    REDIS_ERRORS,
    REDIS_DURATION,
    POSTGRES_QUERIES,
    POSTGRES_ERRORS,
    POSTGRES_DURATION,
    POSTGRES_TLS,
    MYSQL_QUERIES,
    MYSQL_ERRORS,
    MYSQL_DURATION,
    UNTRACKED,
];

const DIRS: [&str; 2] = ["server", "client"];
const PROTOCOLS: [&str; k::PROTO_TABLES] = ["redis", "postgres", "mysql"];

fn dir(d: u8) -> String {
    DIRS[usize::from(d & 1)].to_string()
}

fn kind(v: u8) -> String {
    k::PROTO_KINDS
        .get(usize::from(v))
        .map_or(metrics::OTHER, |s| s)
        .to_string()
}

/// A kernel name (Redis command, SQLSTATE class): `other` when the kernel could not read it.
fn name(raw: &[u8]) -> String {
    if raw.first().is_none_or(|&b| b == 0) {
        return metrics::OTHER.to_string();
    }
    metrics::label_value(raw)
}

/// One scrape's reading of the protocol maps, summed over CPUs.
#[derive(Default)]
pub(super) struct Protocols {
    /// By (proto, what, dir, kind, code, name).
    counts: BTreeMap<(u8, u8, u8, u8, u32, String), u64>,
    /// By (proto, dir, kind).
    hists: Vec<(u8, u8, u8, Log2Histogram)>,
    /// By proto, in `k::PROTO_UNTRACKED_REASONS` order.
    untracked: Vec<Vec<u64>>,
}

/// The label budgets (sticky across scrapes) of Redis commands and MySQL error numbers.
pub(super) struct Budgets {
    pub commands: LabelBudget,
    pub codes: LabelBudget,
}

impl Budgets {
    pub fn new(top_n: usize) -> Self {
        Self {
            commands: LabelBudget::new(top_n),
            codes: LabelBudget::new(top_n),
        }
    }
}

impl Protocols {
    /// `enabled`: the slot has the tables (some of --protocols redis,postgres,mysql is on).
    pub(super) fn read(obj: &Object, maps: &Maps<'_>, enabled: bool) -> Self {
        if !enabled {
            return Self::default();
        }
        let mut counts = BTreeMap::new();
        for (key, vals) in maps.percpu_hash::<ProtoKey, u64>("net_proto_counts") {
            let label = if key.proto == k::PROTO_REDIS || key.proto == k::PROTO_POSTGRES {
                name(&key.name)
            } else {
                String::new()
            };
            *counts
                .entry((key.proto, key.what, key.dir, key.kind, key.code, label))
                .or_default() += vals.iter().sum::<u64>();
        }
        let mut hists = Vec::new();
        for (i, vals) in percpu_slots::<SyscallStats>(obj, maps, "net_proto_hists") {
            let mut h = Log2Histogram::new(HIST_BUCKETS);
            for v in vals {
                h.add(&v.hist, v.time_ns);
            }
            if h.count() > 0 {
                let kinds = k::PROTO_KINDS.len();
                let (pd, kd) = (i / kinds, i % kinds);
                hists.push(((pd / 2) as u8 + k::PROTO_REDIS, (pd % 2) as u8, kd as u8, h));
            }
        }
        let reasons = k::PROTO_UNTRACKED_REASONS.len();
        let untracked = (0..k::PROTO_TABLES)
            .map(|p| {
                (0..reasons)
                    .map(|r| maps.counter("net_proto_counters", (p * reasons + r) as u32))
                    .collect()
            })
            .collect();
        Self {
            counts,
            hists,
            untracked,
        }
    }

    /// A reading with every series present (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        let mut h = Log2Histogram::new(HIST_BUCKETS);
        h.add(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
        let mut counts = BTreeMap::new();
        for (p, what, name) in [
            (k::PROTO_REDIS, k::PROTO_REQUESTS, "get"),
            (k::PROTO_REDIS, k::PROTO_ERRORS, "incr"),
            (k::PROTO_POSTGRES, k::PROTO_REQUESTS, ""),
            (k::PROTO_POSTGRES, k::PROTO_ERRORS, "42"),
            (k::PROTO_POSTGRES, k::PROTO_TLS, ""),
            (k::PROTO_MYSQL, k::PROTO_REQUESTS, ""),
            (k::PROTO_MYSQL, k::PROTO_ERRORS, ""),
        ] {
            counts.insert((p, what, 0, 0, 1064, name.to_string()), 3);
        }
        Self {
            counts,
            hists: vec![
                (k::PROTO_REDIS, 0, 0, h.clone()),
                (k::PROTO_POSTGRES, 1, 4, h.clone()),
                (k::PROTO_MYSQL, 0, 7, h),
            ],
            untracked: vec![vec![1; k::PROTO_UNTRACKED_REASONS.len()]; k::PROTO_TABLES],
        }
    }

    fn series(
        &self,
        proto: u8,
        what: u8,
    ) -> impl Iterator<Item = (&(u8, u8, u8, u8, u32, String), u64)> {
        self.counts
            .iter()
            .filter(move |(key, _)| key.0 == proto && key.1 == what)
            .map(|(key, n)| (key, *n))
    }

    fn hists_of(&self, proto: u8) -> impl Iterator<Item = &(u8, u8, u8, Log2Histogram)> {
        self.hists.iter().filter(move |h| h.0 == proto)
    }

    /// `enabled`: which protocols (SLOT_NET_* bits) are on; the others write no series.
    pub(super) fn encode(
        &self,
        enc: &mut DescriptorEncoder,
        enabled: u64,
        budgets: &Budgets,
    ) -> fmt::Result {
        let on = |bit: u64| enabled & bit != 0;

        // Redis: commands bounded by --top-n, the busiest first (sticky).
        let redis = on(sidecar_ebpf::SLOT_NET_REDIS);
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (key, n) in self.series(k::PROTO_REDIS, k::PROTO_REQUESTS) {
            *totals.entry(key.5.clone()).or_default() += n;
        }
        let admitted: std::collections::HashSet<String> = budgets
            .commands
            .fold(totals.into_iter().map(|(c, n)| (c, (), n)).collect())
            .into_iter()
            .map(|(c, _, _)| c)
            .collect();
        let command_series = |what: u8| {
            let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
            if redis {
                for (key, n) in self.series(k::PROTO_REDIS, what) {
                    let c = if admitted.contains(&key.5) {
                        key.5.clone()
                    } else {
                        metrics::OTHER.to_string()
                    };
                    *out.entry((dir(key.2), c)).or_default() += n;
                }
            }
            out.into_iter()
                .map(|((d, c), n)| -> (Labels, u64) { (vec![("direction", d), ("command", c)], n) })
        };
        REDIS_COMMANDS.counter_series(enc, command_series(k::PROTO_REQUESTS))?;
        REDIS_ERRORS.counter_series(enc, command_series(k::PROTO_ERRORS))?;
        REDIS_DURATION.histogram_series(
            enc,
            self.hists_of(k::PROTO_REDIS)
                .filter(|_| redis)
                .map(|h| (vec![("direction", dir(h.1))], h.3.clone())),
        )?;

        // PostgreSQL.
        let pg = on(sidecar_ebpf::SLOT_NET_POSTGRES);
        self.encode_queries(enc, k::PROTO_POSTGRES, pg, &POSTGRES_QUERIES)?;
        let mut classes: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (key, n) in self
            .series(k::PROTO_POSTGRES, k::PROTO_ERRORS)
            .filter(|_| pg)
        {
            *classes.entry((dir(key.2), key.5.clone())).or_default() += n;
        }
        POSTGRES_ERRORS.counter_series(
            enc,
            classes.into_iter().map(|((d, c), n)| -> (Labels, u64) {
                (vec![("direction", d), ("sqlstate_class", c)], n)
            }),
        )?;
        self.encode_durations(enc, k::PROTO_POSTGRES, pg, &POSTGRES_DURATION)?;
        let mut tls: BTreeMap<String, u64> = BTreeMap::new();
        for (key, n) in self.series(k::PROTO_POSTGRES, k::PROTO_TLS).filter(|_| pg) {
            *tls.entry(dir(key.2)).or_default() += n;
        }
        POSTGRES_TLS.counter_series(
            enc,
            tls.into_iter()
                .map(|(d, n)| -> (Labels, u64) { (vec![("direction", d)], n) }),
        )?;

        // MySQL: error numbers bounded by --top-n.
        let my = on(sidecar_ebpf::SLOT_NET_MYSQL);
        self.encode_queries(enc, k::PROTO_MYSQL, my, &MYSQL_QUERIES)?;
        let codes: Vec<(String, String, u64)> = self
            .series(k::PROTO_MYSQL, k::PROTO_ERRORS)
            .filter(|_| my)
            .map(|(key, n)| (key.4.to_string(), dir(key.2), n))
            .collect();
        MYSQL_ERRORS.counter_series(
            enc,
            budgets
                .codes
                .fold(codes)
                .into_iter()
                .map(|(c, d, n)| -> (Labels, u64) { (vec![("direction", d), ("code", c)], n) }),
        )?;
        self.encode_durations(enc, k::PROTO_MYSQL, my, &MYSQL_DURATION)?;

        let bits = [
            sidecar_ebpf::SLOT_NET_REDIS,
            sidecar_ebpf::SLOT_NET_POSTGRES,
            sidecar_ebpf::SLOT_NET_MYSQL,
        ];
        UNTRACKED.counter_series(
            enc,
            PROTOCOLS
                .iter()
                .zip(bits)
                .zip(&self.untracked)
                .filter(|((_, bit), _)| on(*bit))
                .flat_map(|((p, _), counts)| {
                    k::PROTO_UNTRACKED_REASONS.iter().zip(counts).map(
                        move |(r, n)| -> (Labels, u64) {
                            (
                                vec![("protocol", p.to_string()), ("reason", r.to_string())],
                                *n,
                            )
                        },
                    )
                }),
        )
    }

    fn encode_queries(
        &self,
        enc: &mut DescriptorEncoder,
        proto: u8,
        on: bool,
        metric: &Metric,
    ) -> fmt::Result {
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (key, n) in self.series(proto, k::PROTO_REQUESTS).filter(|_| on) {
            *out.entry((dir(key.2), kind(key.3))).or_default() += n;
        }
        metric.counter_series(
            enc,
            out.into_iter()
                .map(|((d, kd), n)| -> (Labels, u64) { (vec![("direction", d), ("kind", kd)], n) }),
        )
    }

    fn encode_durations(
        &self,
        enc: &mut DescriptorEncoder,
        proto: u8,
        on: bool,
        metric: &Metric,
    ) -> fmt::Result {
        metric.histogram_series(
            enc,
            self.hists_of(proto).filter(|_| on).map(|h| {
                (
                    vec![("direction", dir(h.1)), ("kind", kind(h.2))],
                    h.3.clone(),
                )
            }),
        )
    }
}

/// `--protocols LIST`: (HTTP on, SLOT_NET_* bits of the others).
pub fn parse(list: &str) -> Result<(bool, u64), String> {
    const VALID: &str = "http, redis, postgres, mysql (comma-separated), or none";
    let list = list.trim();
    if list == "none" {
        return Ok((false, 0));
    }
    let (mut http, mut bits) = (false, 0);
    for p in list.split(',').map(str::trim) {
        match p {
            "http" => http = true,
            "redis" => bits |= sidecar_ebpf::SLOT_NET_REDIS,
            "postgres" | "postgresql" => bits |= sidecar_ebpf::SLOT_NET_POSTGRES,
            "mysql" | "mariadb" => bits |= sidecar_ebpf::SLOT_NET_MYSQL,
            "" => {
                return Err(format!(
                    "--protocols: an empty name in `{list}`; valid: {VALID}"
                ));
            }
            other => {
                return Err(format!(
                    "--protocols: unknown protocol `{other}`; valid: {VALID}"
                ));
            }
        }
    }
    Ok((http, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse() {
        assert_eq!(
            parse("http,redis,postgres,mysql"),
            Ok((true, sidecar_ebpf::SLOT_NET_PROTOS))
        );
        assert_eq!(parse("none"), Ok((false, 0)));
        assert_eq!(parse("redis"), Ok((false, sidecar_ebpf::SLOT_NET_REDIS)));
        let e = parse("redis,ftp").unwrap_err();
        assert!(e.contains("`ftp`") && e.contains("postgres"), "{e}");
        assert!(parse("redis,").is_err());
    }

    #[test]
    fn names_and_kinds() {
        assert_eq!(name(&[0; 24]), "other");
        let mut raw = [0u8; 24];
        raw[..3].copy_from_slice(b"get");
        assert_eq!(name(&raw), "get");
        assert_eq!(kind(0), "SELECT");
        assert_eq!(kind(7), "other");
        assert_eq!(kind(9), "other");
    }
}
