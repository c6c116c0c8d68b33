//! One kernel side per host: sidecars of one build share a pinned set under
//! /sys/fs/bpf/ebpf-sidecar/<abi>/, each reading only its slot; slots of dead sidecars are
//! reclaimed; the last one out leaves nothing; private still works.
//!
//! Real dockerd, the sidecar image, `-v /sys/fs/bpf:/sys/fs/bpf`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::apps::{CODE, app, assert_app, work};
use integration::docker::{self, Container};
use integration::{
    Metrics, Sidecar, host_programs, http_get, require_root, sidecar_bin, wait_for, workload,
};

const BASE: &str = "/sys/fs/bpf/ebpf-sidecar";

/// The host has one set per ABI: tests that count its slots or set its `--max-targets` would
/// see each other's sidecars, so they take turns.
static HOST_SET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HOST_SET.lock().unwrap_or_else(|p| p.into_inner())
}

fn kernel_side(m: &Metrics) -> BTreeMap<String, String> {
    let info: Vec<_> = m
        .matching("ebpf_sidecar_kernel_side_info", &[])
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(info.len(), 1, "one kernel_side_info series");
    info[0].clone().into_iter().collect()
}

fn sidecar(name: &str, app: &str, extra: &[&str]) -> (Container, u16) {
    docker::sidecar_beside(name, app, extra)
}

fn scrape(port: u16) -> Metrics {
    Metrics::parse(&http_get(port, "/metrics", None).expect("scrape").2)
}

/// Stop a sidecar container the way `docker stop` and compose do (SIGTERM): it leaves its set.
/// (`docker rm -f` is SIGKILL: the slot then waits for a survivor to reclaim it.)
fn stop(c: Container) {
    docker::ok(&["stop", "-t", "10", &c.0]);
    drop(c);
}

/// Every BPF map on the host, by name.
fn host_maps() -> BTreeMap<String, usize> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool: apt-get install bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let mut by_name = BTreeMap::new();
    for m in v.as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("").to_string();
        *by_name.entry(name).or_insert(0) += 1;
    }
    by_name
}

fn sets() -> Vec<String> {
    std::fs::read_dir(BASE)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn eight_sidecars_share_one_kernel_side_and_each_counts_only_its_own_app() {
    require_root();
    let _turn = one_at_a_time();
    no_set_left();
    docker::sidecar_image();
    let before = host_programs();
    let apps: Vec<Container> = (0..8)
        .map(|i| app(&format!("ebpf-sidecar-ks-app{i}"), i))
        .collect();
    let (first, first_port) = sidecar("ebpf-sidecar-ks-sc0", &apps[0].0, &[]);
    let one = host_programs();
    let mut sidecars = vec![(first, first_port)];
    for (i, a) in apps.iter().enumerate().skip(1) {
        sidecars.push(sidecar(&format!("ebpf-sidecar-ks-sc{i}"), &a.0, &[]));
    }
    let eight = host_programs();
    let added = |now: &BTreeMap<String, usize>| -> BTreeMap<String, usize> {
        now.iter()
            .filter_map(|(n, c)| {
                let was = before.get(n).copied().unwrap_or(0);
                (*c > was).then(|| (n.clone(), c - was))
            })
            .collect()
    };
    assert!(
        !added(&one).is_empty(),
        "the first sidecar attached programs"
    );
    assert_eq!(
        added(&eight),
        added(&one),
        "eight sidecars attach what one attaches (one set, not eight)"
    );

    let mut abi = None;
    let mut slots = Vec::new();
    for (_, port) in &sidecars {
        let m = scrape(*port);
        let ks = kernel_side(&m);
        assert_eq!(ks["mode"], "shared", "{ks:?}");
        assert_eq!(*abi.get_or_insert(ks["abi"].clone()), ks["abi"]);
        slots.push(ks["slot"].clone());
        assert_eq!(m.sum("ebpf_sidecar_kernel_side_targets", &[]), 8.0);
    }
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 8, "eight distinct slots");
    assert!(sets().contains(abi.as_ref().unwrap()), "{:?}", sets());

    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    for (i, (_, port)) in sidecars.iter().enumerate() {
        assert_app(&scrape(*port), i, 1, &format!("sidecar {i}"));
    }
    // Twice more for app 3 only: nobody else moves.
    work(&apps[3], 3, 2);
    work(&apps[3], 3, 3);
    for (i, (_, port)) in sidecars.iter().enumerate() {
        assert_app(
            &scrape(*port),
            i,
            if i == 3 { 3 } else { 1 },
            &format!("sidecar {i}"),
        );
    }

    for (c, _) in sidecars {
        stop(c);
    }
    wait_for("the set removed", Duration::from_secs(20), || {
        (!sets().contains(abi.as_ref().unwrap())).then_some(())
    });
    // Freed by the kernel a moment after their last reference (RCU).
    if wait_for_ok(Duration::from_secs(10), || {
        added(&host_programs()).is_empty()
    })
    .is_err()
    {
        panic!("programs left: {:?}", added(&host_programs()));
    }
}

#[test]
fn a_killed_sidecars_slot_is_reclaimed_and_the_last_one_out_leaves_nothing() {
    require_root();
    let _turn = one_at_a_time();
    no_set_left();
    docker::sidecar_image();
    let before = host_programs();
    let maps_before = host_maps();
    let a = app("ebpf-sidecar-ks-a", 0);
    let b = app("ebpf-sidecar-ks-b", 1);
    let c = app("ebpf-sidecar-ks-c", 2);
    let (sa, pa) = sidecar("ebpf-sidecar-ks-sa", &a.0, &[]);
    let (_sb, pb) = sidecar("ebpf-sidecar-ks-sb", &b.0, &[]);
    let abi = kernel_side(&scrape(pa))["abi"].clone();
    let slot_a = kernel_side(&scrape(pa))["slot"].clone();
    work(&a, 0, 1);
    assert_app(&scrape(pa), 0, 1, "a");
    docker::ok(&["kill", "-s", "KILL", &sa.0]);
    // Reclaimed within 10 s of the kill: b sees itself alone.
    let t0 = std::time::Instant::now();
    wait_for("slot reclaimed", Duration::from_secs(10), || {
        (scrape(pb).sum("ebpf_sidecar_kernel_side_targets", &[]) == 1.0).then_some(())
    });
    eprintln!("reclaimed {:?} after the kill", t0.elapsed());
    drop(sa);
    // a works on, unwatched; c's new sidecar takes the freed slot with clean counts.
    work(&a, 0, 2);
    let (sc, pc) = sidecar("ebpf-sidecar-ks-sc", &c.0, &[]);
    let ks = kernel_side(&scrape(pc));
    assert_eq!(ks["slot"], slot_a, "the reclaimed slot is reused");
    work(&c, 2, 1);
    work(&b, 1, 1);
    assert_app(&scrape(pc), 2, 1, "c");
    assert_app(&scrape(pb), 1, 1, "b");

    stop(sc);
    stop(_sb);
    wait_for("the set removed", Duration::from_secs(20), || {
        (!sets().contains(&abi)).then_some(())
    });
    assert!(!Path::new(BASE).join(&abi).exists());
    // Programs and maps go with their last reference (a pin, a link, an fd), freed by the
    // kernel a moment later (RCU): allow it that moment.
    let left = || -> BTreeMap<String, usize> {
        host_programs()
            .into_iter()
            .filter(|(n, c)| before.get(n).copied().unwrap_or(0) < *c)
            .collect()
    };
    if wait_for_ok(Duration::from_secs(10), || left().is_empty()).is_err() {
        panic!("programs of ours left: {:?}", left());
    }
    wait_for("no map of ours left", Duration::from_secs(10), || {
        let more: BTreeMap<String, usize> = host_maps()
            .into_iter()
            .filter(|(n, c)| maps_before.get(n).copied().unwrap_or(0) < *c)
            .collect();
        more.is_empty().then_some(())
    });
    assert!(sets().is_empty(), "{:?}", sets());
}

/// Host-mode sidecars (the test's own binary) on one set with different options, and a private
/// one beside them.
#[test]
fn mixed_options_on_one_set_and_a_private_sidecar_beside_it() {
    require_root();
    let _turn = one_at_a_time();
    let counted = workload("counted");
    let run = |extra: &[&str], n: u64| -> (Metrics, String) {
        let out = tempfile_path();
        let mut cmd = Command::new(sidecar_bin());
        cmd.args(["run", "--probes", "process,syscalls,net"])
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--metrics-out"])
            .arg(&out)
            .arg("--")
            .arg(&counted)
            .args(["run", &n.to_string(), "5", "2", &CODE.to_string()]);
        let o = cmd.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(CODE),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        (
            Metrics::parse(&text),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // A long-lived member keeps the set up while the others come and go.
    let keeper = run_server(
        &sidecar_bin(),
        &["--probes", "process,syscalls"],
        &["sleep", "60"],
    );
    let (lat_off, _) = run(&["--syscall-latency", "off"], 1111);
    let (lat_on, _) = run(&["--http-paths"], 2222);
    let (private, log) = run(&["--kernel-side", "private"], 3333);
    let km = keeper.scrape();
    assert_eq!(kernel_side(&km)["mode"], "shared");
    for (m, n, mode) in [
        (&lat_off, 1111, "shared"),
        (&lat_on, 2222, "shared"),
        (&private, 3333, "private"),
    ] {
        assert_eq!(kernel_side(m)["mode"], mode);
        assert_eq!(
            m.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
            n as f64
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "openat"), ("errno", "ENOENT")]
            ),
            5.0
        );
        assert_eq!(
            m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
            2.0
        );
    }
    assert_eq!(
        lat_off.sum("ebpf_sidecar_syscall_seconds_total", &[]),
        0.0,
        "latency off: no time measured"
    );
    assert!(
        lat_on.sum(
            "ebpf_sidecar_syscall_seconds_total",
            &[("syscall", "getppid")]
        ) > 0.0
    );
    assert!(log.contains("private"), "{log}");
    // The keeper counted none of it.
    assert_eq!(
        km.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
        0.0
    );
}

#[test]
fn bad_kernel_side_input_exits_2_with_the_reason() {
    require_root();
    let _turn = one_at_a_time();
    let out = Command::new(sidecar_bin())
        .args(["run", "--max-targets", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-targets"));

    // No bpffs: shared refuses and names the mount; auto falls back to private and says why.
    let script = format!(
        "mount --make-rprivate / && umount -l /sys/fs/bpf; {bin} run --kernel-side shared --probes process -- true; echo rc=$?; {bin} run --probes process --metrics-out /tmp/ks-auto.prom -- true; echo rc=$?",
        bin = sidecar_bin().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rc=2"), "{text}");
    assert!(text.contains("-v /sys/fs/bpf:/sys/fs/bpf"), "{text}");
    assert!(text.contains("kernel side: private"), "{text}");
    assert!(text.contains("rc=0"), "{text}");

    // A full set: the second sidecar gets no slot. `--max-targets` is fixed by whoever creates
    // the set, so start from none.
    no_set_left();
    let keeper = run_server(
        &sidecar_bin(),
        &["--max-targets", "1", "--probes", "process"],
        &["sleep", "60"],
    );
    let out = Command::new(sidecar_bin())
        .args(["run", "--probes", "process", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no free slot"));
    drop(keeper);
}

/// `ebpf-sidecar run OPTS -- CMD` (of `bin`) on the host, serving until dropped (SIGTERM, so
/// it leaves its set).
fn run_server(bin: &Path, opts: &[&str], cmd: &[&str]) -> Sidecar {
    let args: Vec<&str> = std::iter::once("run")
        .chain(opts.iter().copied())
        .chain(std::iter::once("--"))
        .chain(cmd.iter().copied())
        .collect();
    Sidecar::start_with(bin, &args, &[], Duration::from_secs(30))
}

/// Make sure no set is on the host: a set left by an earlier test's killed sidecar keeps its
/// stale slots until a live sidecar reclaims them (5 s), sweeps dead sets of other builds and
/// leaves last.
fn no_set_left() {
    let sets = || {
        std::fs::read_dir(BASE)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    if !sets().is_empty() {
        let st = Command::new(sidecar_bin())
            .args(["run", "--probes", "process", "--", "sleep", "7"])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    assert!(
        sets().is_empty(),
        "{:?} still there: is a sidecar running on this host?",
        sets()
    );
}

/// Poll `f` until true or `limit`.
fn wait_for_ok(limit: Duration, f: impl Fn() -> bool) -> Result<(), ()> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if f() { Ok(()) } else { Err(()) }
}

fn tempfile_path() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "ebpf-sidecar-ks-{}-{}.prom",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// A build whose kernel side differs (`SIDECAR_EBPF_CFLAGS=-DSIDECAR_TREE_MAX=8192`: another map
/// layout) gets a set of its own beside this build's; both count exactly.
#[test]
fn two_abis_side_by_side_get_two_sets_both_exact() {
    require_root();
    let _turn = one_at_a_time();
    let root = integration::repo_root();
    let dir = root.join("target/abi-variant");
    let st = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "sidecar",
            "--bin",
            "ebpf-sidecar",
        ])
        .env("CARGO_TARGET_DIR", &dir)
        .env("SIDECAR_EBPF_CFLAGS", "-DSIDECAR_TREE_MAX=8192")
        .current_dir(&root)
        .status()
        .expect("cargo");
    assert!(st.success(), "building the variant");
    let variant = dir.join("release/ebpf-sidecar");
    let counted = workload("counted");
    let serve = ["serve", "777", "4", "3", "42"];
    let cmd: Vec<&str> = std::iter::once(counted.to_str().unwrap())
        .chain(serve)
        .collect();
    let a = run_server(&sidecar_bin(), &["--probes", "process,syscalls"], &cmd);
    let b = run_server(&variant, &["--probes", "process,syscalls"], &cmd);
    let (pa, pb) = (a.port, b.port);
    let (ka, kb) = (kernel_side(&scrape(pa)), kernel_side(&scrape(pb)));
    assert_eq!(
        (ka["mode"].as_str(), kb["mode"].as_str()),
        ("shared", "shared")
    );
    assert_ne!(ka["abi"], kb["abi"], "a changed map layout is another ABI");
    let s = sets();
    assert!(s.contains(&ka["abi"]) && s.contains(&kb["abi"]), "{s:?}");
    // Each workload serves USR1 with one run; a and b each once, b once more.
    for (child, port, times) in [(&a, pa, 1), (&b, pb, 2)] {
        let pid = workload_pid(child.child.id());
        for n in 1..=times {
            // SAFETY: signalling the workload we started.
            unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
            wait_for("a run counted", Duration::from_secs(20), || {
                let m = scrape(port);
                let exits = m.sum(
                    "ebpf_sidecar_process_exits_total",
                    &[("code", &CODE.to_string())],
                );
                (exits >= n as f64).then_some(())
            });
        }
        let m = scrape(port);
        assert_eq!(
            m.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
            777.0 * times as f64
        );
        assert_eq!(
            m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
            3.0 * times as f64
        );
    }
    drop((a, b));
    let s = sets();
    assert!(!s.contains(&ka["abi"]) && !s.contains(&kb["abi"]), "{s:?}");
}

/// The `counted serve` child of a `run` sidecar (a process whose parent it is).
fn workload_pid(sidecar: u32) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(sidecar)
            })
        })
        .expect("the workload runs")
}

/// A restarted container lives in a new cgroup: its slot follows it.
#[test]
fn a_restarted_container_is_followed_on_the_shared_set() {
    require_root();
    let _turn = one_at_a_time();
    docker::sidecar_image();
    let a = app("ebpf-sidecar-ks-restart", 4);
    let s = integration::Sidecar::start(&["--target-container", &a.0]);
    assert_eq!(kernel_side(&s.scrape())["mode"], "shared");
    work(&a, 4, 1);
    assert_app(&s.scrape(), 4, 1, "before the restart");
    docker::ok(&["restart", "-t", "1", &a.0]);
    wait_for("ready again", Duration::from_secs(20), || {
        (a.logs().matches("ready").count() >= 2).then_some(())
    });
    wait_for("target re-acquired", Duration::from_secs(10), || {
        (s.scrape()
            .sum("ebpf_sidecar_target_acquisitions_total", &[])
            >= 2.0)
            .then_some(())
    });
    work(&a, 4, 2);
    assert_app(&s.scrape(), 4, 2, "after the restart");
}
