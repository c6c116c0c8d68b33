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
