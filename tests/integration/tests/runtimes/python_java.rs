//! CPython 3.11 (function calls, GC, a process started late) and OpenJDK 17 (GC pauses, class
//! loading, threads).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

#[test]
fn python_gc_and_calls_match_bpftrace() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    let script = python_script();
    let run = GatedRun::new(
        "python",
        &["--runtime-calls"],
        &[PYTHON, script.to_str().unwrap()],
    );
    let sidecar = run.pid();
    let bt = Bpftrace::start(
        "python",
        &format!(
            "usdt:{PYTHON}:python:gc__start /curtask->real_parent->tgid == {sidecar}/ {{ @gc = count(); }} \
         usdt:{PYTHON}:python:gc__done /curtask->real_parent->tgid == {sidecar}/ {{ @done = count(); }} \
         usdt:{PYTHON}:python:function__entry /curtask->real_parent->tgid == {sidecar} && str(arg1) == \"counted_fn\"/ {{ @f = count(); }}"
        ),
    );
    let m = run.go_and_wait();
    let maps = bt.stop();
    let ours = m.sum(
        "ebpf_sidecar_runtime_gc_duration_seconds_count",
        &[("runtime", "python")],
    );
    let theirs = bpf_value(&maps, "@gc");
    eprintln!(
        "python GCs: sidecar {ours}, bpftrace {theirs} (gc__done {})",
        bpf_value(&maps, "@done")
    );
    assert!(theirs >= GC_CALLS, "bpftrace saw {theirs} GCs");
    assert_eq!(
        ours, theirs as f64,
        "GC count equals bpftrace's on the same run"
    );
    // gc.collect() collects generation 2.
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python"), ("generation", "2")]
        ) >= GC_CALLS as f64
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_function_calls_total",
            &[("runtime", "python"), ("function", "work:counted_fn")]
        ),
        F_CALLS as f64,
        "F calls under settrace"
    );
    assert_eq!(bpf_value(&maps, "@f"), F_CALLS);
    // Without a trace function CPython 3.11 does not fire function__entry.
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_function_calls_total",
            &[("function", "work:untraced_fn")]
        ),
        0.0
    );
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_imports_total",
            &[("runtime", "python")]
        ) > 0.0
    );
    for p in ["gc__start", "gc__done", "function__entry"] {
        assert_eq!(
            m.sum(
                "ebpf_sidecar_usdt_probes_attached",
                &[("provider", "python"), ("probe", p)]
            ),
            1.0,
            "{p} attached"
        );
    }
}

#[test]
fn python_calls_are_off_by_default() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    let script = python_script();
    let m = GatedRun::new("python-nocalls", &[], &[PYTHON, script.to_str().unwrap()]).go_and_wait();
    assert_eq!(m.sum("ebpf_sidecar_runtime_function_calls_total", &[]), 0.0);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_usdt_probes_attached",
            &[("probe", "function__entry")]
        ),
        0.0
    );
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python"), ("generation", "2")]
        ) >= GC_CALLS as f64
    );
}

fn java_home() -> PathBuf {
    let java = std::fs::canonicalize("/usr/bin/java")
        .expect("java missing: apt-get install openjdk-17-jdk-headless");
    java.parent().unwrap().parent().unwrap().to_path_buf()
}

#[test]
fn java_serial_gc_pauses() {
    require_root();
    require("/usr/bin/javac", "apt-get install openjdk-17-jdk-headless");
    const N: u64 = 9;
    let dir = scratch("java");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Gc.java"),
        "public class Gc { public static void main(String[] a) { \
         int n = Integer.parseInt(a[0]); for (int i = 0; i < n; i++) System.gc(); } }",
    )
    .unwrap();
    let st = Command::new("javac")
        .arg(dir.join("Gc.java"))
        .status()
        .unwrap();
    assert!(st.success());
    let jvm = java_home().join("lib/server/libjvm.so");
    let run = GatedRun::new(
        "java",
        &[],
        &[
            "java",
            "-XX:+UseSerialGC",
            "-Xms512m",
            "-Xmx512m",
            "-cp",
            dir.to_str().unwrap(),
            "Gc",
            &N.to_string(),
        ],
    );
    let sidecar = run.pid();
    let jvm_s = jvm.display().to_string();
    // The JVM's own threads are children of nobody we know; filter on the java process instead.
    let bt = Bpftrace::start(
        "java",
        &format!(
            "usdt:{jvm_s}:hotspot:gc__begin /curtask->group_leader->real_parent->tgid == {sidecar}/ {{ @gc = count(); }}"
        ),
    );
    let m = run.go_and_wait();
    let maps = bt.stop();
    let full = m.sum(
        "ebpf_sidecar_runtime_gc_duration_seconds_count",
        &[("runtime", "java"), ("generation", "full")],
    );
    let all = m.sum(
        "ebpf_sidecar_runtime_gc_duration_seconds_count",
        &[("runtime", "java")],
    );
    eprintln!(
        "java GCs: sidecar full {full} all {all}, bpftrace {}",
        bpf_value(&maps, "@gc")
    );
    // With a 512 MB heap and SerialGC the program allocates too little for a young collection:
    // each System.gc() is one full collection, and nothing else runs a GC.
    assert_eq!(full, N as f64, "one full GC per System.gc()");
    assert_eq!(
        all,
        bpf_value(&maps, "@gc") as f64,
        "same count as bpftrace"
    );
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_classes_loaded_total",
            &[("runtime", "java")]
        ) > 100.0
    );
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_threads_started_total",
            &[("runtime", "java")]
        ) >= 1.0
    );
}

/// A runtime process that starts after the sidecar (here 1.5 s into the run, through a shell,
/// so nothing is attached up front) is found by the periodic rescan and attached.
#[test]
fn late_python_is_discovered() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    const N: u64 = 13;
    let script = scratch("late.py");
    // GC off first; the rescan (every second) attaches while the script sleeps; then N collects.
    std::fs::write(
        &script,
        format!(
            "import gc, time\ngc.disable()\ntime.sleep(3)\n\
             for _ in range({N}):\n    gc.collect()\ntime.sleep(60)\n"
        ),
    )
    .unwrap();
    let listen = free_port();
    let log = scratch("late-sidecar.log");
    let child = Command::new(sidecar_bin())
        .args(["run", "--probes", "runtimes", "--listen"])
        .arg(format!("127.0.0.1:{listen}"))
        .args([
            "--",
            "/bin/sh",
            "-c",
            &format!("sleep 1.5; exec {PYTHON} {}", script.display()),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sidecar = Sidecar {
        child,
        port: listen,
        log,
    };
    let m = wait_for("the late python's GCs", Duration::from_secs(20), || {
        let m = http_get(listen, "/metrics", None)
            .ok()
            .map(|r| Metrics::parse(&r.2))?;
        (m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python")],
        ) >= N as f64)
            .then_some(m)
    });
    std::thread::sleep(Duration::from_millis(500));
    let m2 = sidecar.scrape();
    assert_eq!(
        m2.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python"), ("generation", "2")]
        ),
        N as f64,
        "exactly the N collections made after attach:\n{}",
        sidecar.log_text()
    );
    let info: Vec<_> = m
        .matching("ebpf_sidecar_runtime_info", &[])
        .map(|(l, v)| (l.clone(), v))
        .collect();
    assert!(
        info.iter().any(|(l, v)| *v == 1.0
            && l.get("runtime").map(String::as_str) == Some("python")
            && l.get("version").map(String::as_str) == Some("3.11")),
        "runtime_info: {info:?}"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_usdt_probes_attached",
            &[("provider", "python"), ("probe", "gc__start")]
        ),
        1.0
    );
    // The script would sleep on; end it (a pid we started, through the sidecar).
    for (l, _) in &info {
        if let Some(pid) = l.get("pid").and_then(|p| p.parse::<i32>().ok()) {
            // SAFETY: plain kill of the python process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Two `run` sidecars at once on the one shared kernel side, each around its own python3.11
/// (same binary: the pack's sites are attached once for both), held at a gate until both serve
/// and scraped before the pythons exit (CPython collects at exit, GC off or not). Each reports
/// exactly its own GCs; only A asked for --runtime-calls, so only A counts function calls
/// although B's python runs under settrace too; only B declared a --config metric on gc__start,
/// which counts B's GCs and none of A's.
#[test]
fn two_sidecars_on_the_shared_kernel_side_each_count_their_own() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    let cfg = scratch("two.yaml");
    std::fs::write(
        &cfg,
        "metrics:\n  - name: two_gc_starts\n    runtime: python\n    probe: python:gc__start\n    labels: [{name: generation, arg: 0}]\n",
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    // (tag, GCs, calls, sidecar options)
    let plan: [(&str, u64, u64, Vec<&str>); 2] = [
        ("two_a", 17, 311, vec!["--runtime-calls"]),
        ("two_b", 29, 517, vec!["--config", &cfg]),
    ];
    let fifo = |name: String| {
        let p = scratch(&name);
        let _ = std::fs::remove_file(&p);
        assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
        p
    };
    let mut runs = Vec::new();
    for (tag, gcs, calls, opts) in &plan {
        let (go, end) = (fifo(format!("{tag}.go")), fifo(format!("{tag}.end")));
        let script = scratch(&format!("{tag}.py"));
        std::fs::write(
            &script,
            format!(
                "import gc, sys\n\
                 gc.disable()\n\
                 open('{}').read()\n\
                 for _ in range({gcs}):\n    gc.collect()\n\
                 def counted_fn(x):\n    return x + 1\n\
                 sys.settrace(lambda *a: None)\n\
                 for i in range({calls}):\n    counted_fn(i)\n\
                 sys.settrace(None)\n\
                 open('{}').read()\n",
                go.display(),
                end.display()
            ),
        )
        .unwrap();
        let sidecar = run_sidecar(tag, opts, &[PYTHON, script.to_str().unwrap()]);
        runs.push((sidecar, go, end));
    }
    let slots: Vec<Option<u32>> = runs
        .iter()
        .map(|(s, _, _)| integration::shared_slot(&s.log_text()).map(|(slot, _)| slot))
        .collect();
    assert!(
        slots.iter().all(Option::is_some) && slots[0] != slots[1],
        "two slots of one shared kernel side: {slots:?}"
    );
    for (_, go, _) in &runs {
        std::fs::write(go, "go\n").unwrap();
    }
    let mut metrics = Vec::new();
    for ((s, _, _), (tag, gcs, _, _)) in runs.iter().zip(&plan) {
        // Its work is done once its GCs are all in; then a moment for the calls after them.
        wait_for(&format!("{tag}'s GCs"), Duration::from_secs(20), || {
            let n = s.scrape().sum(
                "ebpf_sidecar_runtime_gc_duration_seconds_count",
                &[("runtime", "python")],
            );
            (n >= *gcs as f64).then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    for (s, _, _) in &runs {
        let m = s.scrape();
        let lint = promtool_check(&m.text);
        assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
        metrics.push(m);
    }
    for (s, _, end) in &mut runs {
        std::fs::write(&*end, "end\n").unwrap();
        let st = s.child.wait().unwrap();
        assert!(st.success(), "{st}\n{}", s.log_text());
    }
    for (i, ((tag, gcs, calls, _), m)) in plan.iter().zip(&metrics).enumerate() {
        let other = plan[1 - i].0;
        assert_eq!(
            m.sum(
                "ebpf_sidecar_runtime_gc_duration_seconds_count",
                &[("runtime", "python"), ("generation", "2")]
            ),
            *gcs as f64,
            "{tag}: its own GCs"
        );
        let fc = m.sum(
            "ebpf_sidecar_runtime_function_calls_total",
            &[
                ("runtime", "python"),
                ("function", &format!("{tag}:counted_fn")),
            ],
        );
        assert_eq!(fc, if i == 0 { *calls as f64 } else { 0.0 }, "{tag}: calls");
        assert!(
            !m.text.contains(other),
            "{tag}: {other} leaked in:\n{}",
            m.text
        );
        assert_eq!(
            m.sum("ebpf_sidecar_events_lost_total", &[("probe", "runtimes")]),
            0.0
        );
    }
    let (a, b) = (&metrics[0], &metrics[1]);
    assert_eq!(
        a.sum(
            "ebpf_sidecar_usdt_probes_attached",
            &[("provider", "python"), ("probe", "function__entry")]
        ),
        1.0
    );
    assert_eq!(
        b.sum(
            "ebpf_sidecar_usdt_probes_attached",
            &[("probe", "function__entry")]
        ),
        0.0
    );
    assert_eq!(b.sum("ebpf_sidecar_runtime_function_calls_total", &[]), 0.0);
    assert_eq!(
        b.sum(
            "ebpf_sidecar_usdt_two_gc_starts_total",
            &[("generation", "2")]
        ),
        plan[1].1 as f64,
        "B's --config metric: B's GCs only"
    );
    assert_eq!(a.sum("ebpf_sidecar_usdt_two_gc_starts_total", &[]), 0.0);
}

/// Run counts of the runtimes family's uprobe programs (bpftool shows uprobes as `kprobe`),
/// summed; kernel.bpf_stats_enabled must be on.
fn uprobe_runs() -> u64 {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (apt-get install bpftool)");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["type"] == "kprobe" && p["name"].as_str().is_some_and(|n| n.starts_with("rt_"))
        })
        .map(|p| p["run_cnt"].as_u64().unwrap_or(0))
        .sum()
}

/// Per-process attach: a python outside the target, running the same binary, takes no uprobe
/// hit (the runtimes programs' run count does not move while only it collects) and adds
/// nothing; the target's own collections are counted exactly. The target is found by
/// --target-pid (not `run`, whose command is hooked for every process before it starts).
#[test]
fn neighbour_python_takes_no_uprobe_hit() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    const N: u64 = 13;
    const M: u64 = 50;
    let go_t = scratch("nb-target.go");
    let go_n = scratch("nb-neighbour.go");
    for f in [&go_t, &go_n] {
        let _ = std::fs::remove_file(f);
    }
    // GC off; wait for the go file; N (or M) collections; then sleep until killed.
    let script = |go: &Path, n: u64| {
        format!(
            "import gc, os, time\ngc.disable()\n\
             while not os.path.exists('{}'):\n    time.sleep(0.05)\n\
             for _ in range({n}):\n    gc.collect()\ntime.sleep(60)\n",
            go.display()
        )
    };
    let cg = integration::real::TestCgroup::new("rt-neighbour");
    let target =
        integration::real::Proc(cg.spawn(Command::new(PYTHON).args(["-c", &script(&go_t, N)])));
    let neighbour = integration::real::Proc(
        Command::new(PYTHON)
            .args(["-c", &script(&go_n, M)])
            .spawn()
            .unwrap(),
    );
    let sidecar = Sidecar::start(&[
        "--target-pid",
        &target.0.id().to_string(),
        "--probes",
        "runtimes",
    ]);
    let pid = target.0.id().to_string();
    wait_for("the target python hooked", Duration::from_secs(20), || {
        let m = sidecar.scrape();
        (m.sum(
            "ebpf_sidecar_runtime_info",
            &[("runtime", "python"), ("pid", &pid)],
        ) == 1.0)
            .then_some(())
    });
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enabling bpf stats");
    let gcs = |m: &Metrics| {
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python")],
        )
    };
    std::thread::sleep(Duration::from_millis(300));
    let runs0 = uprobe_runs();
    std::fs::write(&go_n, "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let runs1 = uprobe_runs();
    let m1 = sidecar.scrape();
    std::fs::write(&go_t, "").unwrap();
    let m2 = wait_for("the target's collections", Duration::from_secs(10), || {
        let m = sidecar.scrape();
        (gcs(&m) >= N as f64).then_some(m)
    });
    std::thread::sleep(Duration::from_millis(300));
    let runs2 = uprobe_runs();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats.trim());
    drop(neighbour);
    drop(target);
    eprintln!(
        "uprobe runs: neighbour phase {} (M = {M} collections), target phase {} (N = {N})",
        runs1 - runs0,
        runs2 - runs1
    );
    assert_eq!(
        runs1 - runs0,
        0,
        "the neighbour's collections ran a runtimes uprobe program"
    );
    assert_eq!(gcs(&m1), 0.0, "the neighbour's collections were counted");
    assert!(runs2 > runs1, "the target's collections ran no program");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gcs(&sidecar.scrape()), N as f64);
    assert_eq!(gcs(&m2), N as f64);
}
