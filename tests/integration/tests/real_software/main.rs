//! Tests against real software (issue 16): Debian's nginx, redis, PostgreSQL, fio, stress-ng and
//! dnsmasq run as the target, each compared on the same run with a truth that does not come from
//! the sidecar: the server's own log or statistics, bpftrace filtered by the same cgroup id, a
//! tshark capture, the cgroup's `cpu.stat`, rusage. Every server runs in a cgroup of its own (made
//! by the test, or by `run`), never in the root cgroup. Helpers: `integration::real`.
//!
//! Where a server keeps making syscalls on its own (timers), the comparison window is cut by
//! freezing its cgroup (`cgroup.freeze`): the sidecar and bpftrace attach while it is frozen and
//! are both read while it is frozen again, so they saw exactly the same events.

mod databases;
mod nginx;
mod tools;
