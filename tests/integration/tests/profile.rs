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

#[test]
fn hot_function_dominates_and_all_formats_agree() {
    require_root();
    let w = workload("prof_burn");
    let port = free_port();
    let mut child = Command::new(sidecar_bin())
        .args([
            "run",
            "--probes",
            "profile",
            "--profile-hz",
            "99",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--",
        ])
        .arg(&w)
        .arg("8")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("sidecar serving", Duration::from_secs(10), || {
        http_get(port, "/healthz", None).ok().map(|_| ())
    });
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
