//! Profiler: a known hot function dominates the samples; folded, pprof and SVG outputs agree and
//! concurrent requests share one sampling session.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::*;

/// Strings of a pprof profile.proto (field 6 of Profile), decoded by hand.
fn pprof_strings(gz: &[u8]) -> (Vec<String>, usize) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    let (mut i, mut strings, mut samples) = (0, Vec::new(), 0);
    let varint = |b: &[u8], i: &mut usize| {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return v;
            }
        }
    };
    while i < raw.len() {
        let key = varint(&raw, &mut i);
        match key & 7 {
            0 => {
                varint(&raw, &mut i);
            }
            2 => {
                let len = varint(&raw, &mut i) as usize;
                match key >> 3 {
                    6 => strings.push(String::from_utf8_lossy(&raw[i..i + len]).into_owned()),
                    2 => samples += 1,
                    _ => {}
                }
                i += len;
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    (strings, samples)
}

/// `cmd` under `ebpf-sidecar run --probes profile` at 99 Hz, in `cwd`, once it serves; and its
/// port.
fn profiled(cmd: &[&str], cwd: &std::path::Path) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(sidecar_bin())
        .args([
            "run",
            "--probes",
            "profile",
            "--profile-hz",
            "99",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--")
        .args(cmd)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("sidecar serving", Duration::from_secs(10), || {
        http_get(port, "/healthz", None).ok().map(|_| ())
    });
    (child, port)
}

#[test]
fn hot_function_dominates_and_all_formats_agree() {
    require_root();
    let w = workload("prof_burn");
    let (mut child, port) = profiled(&[w.to_str().unwrap(), "8"], &std::env::temp_dir());
    // Three requests at once: one sampling session serves all of them.
    let folded = std::thread::spawn(move || {
        http_get(port, "/debug/profile/folded?seconds=3", None).unwrap()
    });
    let svg = std::thread::spawn(move || {
        http_get(port, "/debug/flamegraph.svg?seconds=3", None).unwrap()
    });
    let pprof =
        std::thread::spawn(move || http_get_bytes(port, "/debug/pprof/profile?seconds=3").unwrap());
    let (folded, svg, pprof) = (
        folded.join().unwrap(),
        svg.join().unwrap(),
        pprof.join().unwrap(),
    );
    let _ = child.wait();

    assert_eq!(folded.0, 200);
    let (mut total, mut hot) = (0u64, 0u64);
    for line in folded.2.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        if stack.split(';').any(|f| f == "burn_cpu_hot_loop") {
            hot += n;
        }
    }
    // 3 s at 99 Hz of one busy thread: about 300 samples.
    assert!(total >= 150, "{total} samples:\n{}", folded.2);
    assert!(
        hot as f64 >= 0.8 * total as f64,
        "burn_cpu_hot_loop in {hot} of {total} samples:\n{}",
        folded.2
    );
    // Every stack starts with the comm: the workload's, or the sidecar's own for the instant
    // between the child entering the run cgroup and exec'ing the workload.
    assert!(
        folded
            .2
            .lines()
            .all(|l| l.starts_with("prof_burn;") || l.starts_with("ebpf-sidecar;")),
        "stacks start with the comm:\n{}",
        folded.2
    );

    assert_eq!(svg.0, 200);
    assert!(svg.1.starts_with("image/svg+xml"), "{}", svg.1);
    assert!(
        svg.2.contains("<svg")
            && svg.2.trim_end().ends_with("</svg>")
            && svg.2.contains("burn_cpu_hot_loop")
    );

    assert_eq!(pprof.0, 200);
    let (strings, samples) = pprof_strings(&pprof.1);
    assert!(
        strings.iter().any(|s| s == "burn_cpu_hot_loop") && strings.iter().any(|s| s == "cpu"),
        "{strings:?}"
    );
    assert!(samples >= 1);
}

/// Node 20 with `--perf-basic-prof`: JIT-compiled JS functions are named through the perf map
/// node writes at /tmp/perf-<pid>.map, and a hot JS function carries most samples.
#[test]
fn node_perf_basic_prof_names_a_hot_js_function() {
    require_root();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .expect("node not found: apt-get install nodejs");
    assert!(node.status.success());
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-prof-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let js = dir.join("hot.js");
    // Busy for 8 s in one function the JIT compiles (and cannot inline into the loop's caller,
    // which would hide its name).
    std::fs::write(
        &js,
        "function hotJsSpinner(n) { let x = 0; for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; } return x; }\n\
         %NeverOptimizeFunction(main);\n\
         function main() { const end = Date.now() + 8000; let s = 0; while (Date.now() < end) s += hotJsSpinner(200000); console.log(s); }\n\
         main();\n",
    )
    .unwrap();
    // --perf-basic-prof also writes V8's isolate-*.log into the working directory.
    let (mut child, port) = profiled(
        &[
            "node",
            "--perf-basic-prof",
            "--allow-natives-syntax",
            js.to_str().unwrap(),
        ],
        &dir,
    );
    // Let the JIT compile the function first.
    std::thread::sleep(Duration::from_secs(2));
    let folded = http_get(port, "/debug/profile/folded?seconds=3", None).unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(folded.0, 200);
    let (mut total, mut hot) = (0u64, 0u64);
    for line in folded.2.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        // Perf map names read like "JS:*hotJsSpinner /tmp/…/hot.js:1:24" (or LazyCompile: on
        // older V8).
        if stack.split(';').any(|f| f.contains("hotJsSpinner")) {
            hot += n;
        }
    }
    assert!(total >= 150, "{total} samples:\n{}", folded.2);
    assert!(
        hot as f64 >= 0.5 * total as f64,
        "hotJsSpinner in {hot} of {total} samples:\n{}",
        folded.2
    );
}

/// Strip the log's colours.
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in log.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (false, c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Samples in a folded profile, and those with `frame`; every stack must start with one of
/// `comms` (the instant between the child entering the run cgroup and exec'ing the workload is
/// the sidecar's own).
fn folded_counts(text: &str, frame: &str, comms: &[&str]) -> (u64, u64) {
    let (mut total, mut hot) = (0u64, 0u64);
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        if stack.split(';').any(|f| f == frame) {
            hot += n;
        }
        assert!(
            comms.iter().any(|c| stack.starts_with(&format!("{c};"))),
            "a stack of another target: {line}\n{text}"
        );
    }
    (total, hot)
}

/// Two sidecars at once on one shared kernel side (the default `--kernel-side auto` with bpffs
/// mounted), each profiling its own busy target (the same program under two names): one perf
/// event per CPU for the host, and each sidecar's profile holds its own target's samples only.
/// The second sidecar asks for another rate and is told it samples at the first one's.
#[test]
fn two_sidecars_on_a_shared_kernel_side_profile_their_own_target_only() {
    require_root();
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-prof-two-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = workload("prof_burn");
    let second = dir.join("prof_other");
    std::fs::copy(&first, &second).unwrap();
    let start = |prog: &std::path::Path, hz: &str, tag: &str| {
        let port = free_port();
        let log = dir.join(format!("{tag}.log"));
        let child = Command::new(sidecar_bin())
            .args(["run", "--probes", "profile", "--profile-hz", hz, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--")
            .arg(prog)
            .arg("10")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for("sidecar serving", Duration::from_secs(30), || {
            http_get(port, "/healthz", None).ok().map(|_| ())
        });
        (child, port, log)
    };
    let (mut a, a_port, a_log) = start(&first, "99", "a");
    let (mut b, b_port, b_log) = start(&second, "49", "b");
    let fa = std::thread::spawn(move || {
        http_get(a_port, "/debug/profile/folded?seconds=3", None).unwrap()
    });
    let fb = std::thread::spawn(move || {
        http_get(b_port, "/debug/profile/folded?seconds=3", None).unwrap()
    });
    let (fa, fb) = (fa.join().unwrap(), fb.join().unwrap());
    let _ = a.wait();
    let _ = b.wait();
    let (a_log, b_log) = (
        plain(&std::fs::read_to_string(&a_log).unwrap()),
        plain(&std::fs::read_to_string(&b_log).unwrap()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        a_log.contains("kernel side: shared") && a_log.contains("created=true"),
        "{a_log}"
    );
    assert!(
        b_log.contains("kernel side: shared") && b_log.contains("created=false"),
        "{b_log}"
    );
    assert!(
        b_log.contains("samples at 99 Hz"),
        "the second sidecar is told the rate: {b_log}"
    );
    assert_eq!((fa.0, fb.0), (200, 200));
    // Two busy threads on the two CPUs (and whatever else the machine runs): over 3 s at 99 Hz,
    // well over 50 samples each.
    for (fold, comm) in [(&fa.2, "prof_burn"), (&fb.2, "prof_other")] {
        let (total, hot) = folded_counts(fold, "burn_cpu_hot_loop", &[comm, "ebpf-sidecar"]);
        assert!(total >= 50, "{comm}: {total} samples:\n{fold}");
        assert!(
            hot as f64 >= 0.8 * total as f64,
            "{comm}: burn_cpu_hot_loop in {hot} of {total} samples:\n{fold}"
        );
    }
}
