//! Files: exact bytes per path for buffered I/O on named files (the 21st file goes to `other`),
//! exact ENOENT opens with the failing path, exact fsync count, page cache misses of a file read
//! back after dropping it from the cache; nothing from an unmonitored process doing the same.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use integration::*;

// Ground truth of workloads/files_io.c: file i of NFILES has size(i) bytes.
const NFILES: u64 = 21;
const K_MISSING: u64 = 37;
const N_FSYNC: u64 = 13;
const PAGES: u64 = 64;

fn size(i: u64) -> u64 {
    (NFILES - i) * 1000 + i
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = PathBuf::from("/var/tmp").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_io(dir: &std::path::Path, nfiles: u64, k: u64, n: u64, pages: u64) -> Command {
    let mut c = Command::new(workload("files_io"));
    c.arg(dir)
        .args([nfiles, k, n, pages].map(|v| v.to_string()))
        .stdout(Stdio::null());
    c
}

/// Run the workload under `ebpf-sidecar run` and return the final metrics.
fn run_monitored(name: &str, mut cmd: Command) -> Metrics {
    let out = std::env::temp_dir().join(format!("ebpf-sidecar-files-{name}.prom"));
    let _ = std::fs::remove_file(&out);
    let mut run = Command::new(sidecar_bin());
    run.args(["run", "--probes", "files", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--metrics-out")
        .arg(&out)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(Stdio::null());
    assert!(run.status().unwrap().success());
    // The unmonitored twin ran before; run it again now that the sidecar is gone too.
    assert!(cmd.status().unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    Metrics::parse(&text)
}

#[test]
fn buffered_bytes_per_path_opens_and_fsyncs_are_exact() {
    require_root();
    let dir = fresh_dir("ebpf-sidecar-files-mon");
    let other_dir = fresh_dir("ebpf-sidecar-files-unmon");
    // An unmonitored process doing the same thing while the sidecar runs.
    let mut noise = files_io(&other_dir, NFILES, K_MISSING, N_FSYNC, 0)
        .spawn()
        .unwrap();
    let m = run_monitored("exact", files_io(&dir, NFILES, K_MISSING, N_FSYNC, 0));
    assert!(noise.wait().unwrap().success());

    let p = |i: u64| format!("{}/f{i:02}", dir.display());
    // Top 20 by bytes: f00..f19 (sizes decrease with i); f20 is the 21st and goes to `other`.
    for i in 0..NFILES - 1 {
        for metric in [
            "ebpf_sidecar_file_write_bytes_total",
            "ebpf_sidecar_file_read_bytes_total",
        ] {
            assert_eq!(
                m.get(metric, &[("kind", "file"), ("path", &p(i))]),
                Some(size(i) as f64),
                "{metric} {}",
                p(i)
            );
        }
    }
    for metric in [
        "ebpf_sidecar_file_write_bytes_total",
        "ebpf_sidecar_file_read_bytes_total",
    ] {
        assert_eq!(
            m.get(metric, &[("path", &p(NFILES - 1))]),
            None,
            "{metric}: 21st file has its own series"
        );
        assert_eq!(
            m.get(metric, &[("kind", "file"), ("path", "other")]),
            Some(size(NFILES - 1) as f64),
            "{metric}: the 21st file is in other"
        );
    }
    // Two opens per file (write, read back) and one for the fsyncs.
    assert_eq!(
        m.sum("ebpf_sidecar_file_opens_total", &[("result", "ok")]),
        (2 * NFILES + 1) as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_file_opens_total", &[("result", "ENOENT")]),
        K_MISSING as f64
    );
    let missing = format!("{}/missing", dir.display());
    assert_eq!(
        m.get(
            "ebpf_sidecar_file_open_errors_total",
            &[("path", &missing), ("errno", "ENOENT")]
        ),
        Some(K_MISSING as f64)
    );
    assert_eq!(
        m.sum("ebpf_sidecar_file_syncs_total", &[("call", "fsync")]),
        N_FSYNC as f64
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_file_sync_duration_seconds_count",
            &[("call", "fsync")]
        ),
        N_FSYNC as f64
    );
    assert!(
        m.sum(
            "ebpf_sidecar_file_sync_duration_seconds_sum",
            &[("call", "fsync")]
        ) > 0.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_file_syncs_total", &[("call", "fdatasync")]),
        0.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_events_lost_total", &[("probe", "files")]),
        0.0
    );
    let unmon = other_dir.display().to_string();
    assert!(
        !m.text.contains(&unmon),
        "the unmonitored process leaked in:\n{}",
        m.text
    );
}

#[test]
fn page_cache_misses_count_the_pages_read_back() {
    require_root();
    let dir = fresh_dir("ebpf-sidecar-files-pc");
    let m = run_monitored("pc", files_io(&dir, 0, 0, 0, PAGES));
    let pc = format!("{}/pc", dir.display());
    let bytes = (PAGES * 4096) as f64;
    assert_eq!(
        m.get("ebpf_sidecar_file_write_bytes_total", &[("path", &pc)]),
        Some(bytes)
    );
    assert_eq!(
        m.get("ebpf_sidecar_file_read_bytes_total", &[("path", &pc)]),
        Some(bytes)
    );
    // PAGES new pages when written, PAGES again when read back after POSIX_FADV_DONTNEED; a few
    // more for directory and inode blocks read into the block device's cache (0 to 2 seen).
    let misses = m.sum("ebpf_sidecar_page_cache_misses_total", &[]);
    assert!(
        misses >= (2 * PAGES) as f64 && misses <= (2 * PAGES + 8) as f64,
        "page cache misses {misses}, expected {} + at most 8",
        2 * PAGES
    );
    assert_eq!(
        m.sum("ebpf_sidecar_file_syncs_total", &[("call", "fsync")]),
        1.0
    );
}

#[test]
fn pipes_and_char_devices_are_kinds_and_dup_fds_keep_their_path() {
    require_root();
    let out = std::env::temp_dir().join("ebpf-sidecar-files-kinds.prom");
    let dir = fresh_dir("ebpf-sidecar-files-dup");
    let input = dir.join("in");
    std::fs::write(&input, vec![b'x'; 4321]).unwrap();
    // 1000 bytes from /dev/zero through a pipe; /dev/null gets them. Then the shell opens `in`
    // and dup2()s it onto cat's stdin: cat reads a dup'ed fd in a forked child, and the path is
    // still known (it is remembered by struct file, not by fd number).
    let script = format!(
        "head -c 1000 /dev/zero | cat > /dev/null; cat < {} > /dev/null",
        input.display()
    );
    let st = Command::new(sidecar_bin())
        .args(["run", "--probes", "files", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--metrics-out")
        .arg(&out)
        .args(["--", "/bin/sh", "-c", &script])
        .status()
        .unwrap();
    assert!(st.success());
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    let sum = |metric: &str, kind: &str| m.sum(metric, &[("kind", kind)]);
    assert!(sum("ebpf_sidecar_file_read_bytes_total", "char") >= 1000.0);
    assert_eq!(sum("ebpf_sidecar_file_read_bytes_total", "pipe"), 1000.0);
    assert_eq!(sum("ebpf_sidecar_file_write_bytes_total", "pipe"), 1000.0);
    assert_eq!(
        sum("ebpf_sidecar_file_write_bytes_total", "char"),
        1000.0 + 4321.0
    );
    assert_eq!(
        m.get(
            "ebpf_sidecar_file_read_bytes_total",
            &[("path", "/dev/zero")]
        ),
        None,
        "character devices are a kind, not a path"
    );
    assert_eq!(
        m.get(
            "ebpf_sidecar_file_read_bytes_total",
            &[("kind", "file"), ("path", &input.display().to_string())]
        ),
        Some(4321.0),
        "read through a dup'ed fd in a forked child"
    );
}

#[test]
fn container_counts_only_the_target_container() {
    require_root();
    base_image();
    let root = fresh_dir("ebpf-sidecar-files-docker");
    for d in ["app", "other"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let w = workload("files_io");
    let mounts = [
        format!("{}:/files_io:ro", w.display()),
        format!("{}:/data", root.display()),
    ];
    let start = |name: &str| {
        integration::docker::Container::run(
            name,
            &[
                "-v",
                &mounts[0],
                "-v",
                &mounts[1],
                "debian:bookworm-slim",
                "sleep",
                "600",
            ],
        )
    };
    let app = start("ebpf-sidecar-files-app");
    let other = start("ebpf-sidecar-files-other");
    let s = Sidecar::start(&["--target-container", &app.0, "--probes", "files"]);
    let run = |c: &integration::docker::Container, dir: &str| {
        let a = [NFILES, K_MISSING, N_FSYNC, 0].map(|v| v.to_string());
        let mut argv = vec!["exec", c.0.as_str(), "/files_io", dir];
        argv.extend(a.iter().map(String::as_str));
        integration::docker::ok(&argv);
    };
    run(&other, "/data/other");
    run(&app, "/data/app");
    run(&other, "/data/other");
    let m = s.scrape();
    for i in 0..NFILES - 1 {
        let p = format!("/data/app/f{i:02}");
        assert_eq!(
            m.get("ebpf_sidecar_file_write_bytes_total", &[("path", &p)]),
            Some(size(i) as f64),
            "{p}"
        );
        assert_eq!(
            m.get("ebpf_sidecar_file_read_bytes_total", &[("path", &p)]),
            Some(size(i) as f64),
            "{p}"
        );
    }
    assert_eq!(
        m.sum("ebpf_sidecar_file_opens_total", &[("result", "ENOENT")]),
        K_MISSING as f64
    );
    assert_eq!(
        m.get(
            "ebpf_sidecar_file_open_errors_total",
            &[("path", "/data/app/missing"), ("errno", "ENOENT")]
        ),
        Some(K_MISSING as f64)
    );
    assert_eq!(
        m.sum("ebpf_sidecar_file_syncs_total", &[("call", "fsync")]),
        N_FSYNC as f64
    );
    assert!(!m.text.contains("/data/other"), "{}", m.text);
}

/// dockerd up and the base image present (scripts/images.sh makes it); the sidecar runs from the
/// host build, so the sidecar image is not needed.
fn base_image() {
    let out =
        integration::docker::run(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    assert!(
        out.status.success(),
        "dockerd not running or debian:bookworm-slim missing (run scripts/images.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two `run` sidecars at once on the one shared kernel side, each around its own files_io
/// (different numbers of files, failed opens and fsyncs), held at a gate until both serve:
/// each sidecar reports exactly its own workload and nothing of the other's.
#[test]
fn two_sidecars_on_the_shared_kernel_side_each_count_their_own() {
    require_root();
    struct One {
        dir: PathBuf,
        nfiles: u64,
        k: u64,
        n: u64,
        gate: PathBuf,
        out: PathBuf,
        log: PathBuf,
        port: u16,
        child: Option<std::process::Child>,
    }
    let bytes = |nfiles: u64, i: u64| (nfiles - i) * 1000 + i;
    let mut runs: Vec<One> = [("a", 4u64, 7u64, 3u64), ("b", 6, 11, 5)]
        .into_iter()
        .map(|(tag, nfiles, k, n)| {
            let dir = fresh_dir(&format!("ebpf-sidecar-files-two-{tag}"));
            let gate = dir.join("gate");
            let st = Command::new("mkfifo").arg(&gate).status().unwrap();
            assert!(st.success());
            let tmp = std::env::temp_dir();
            One {
                out: tmp.join(format!("ebpf-sidecar-files-two-{tag}.prom")),
                log: tmp.join(format!("ebpf-sidecar-files-two-{tag}.log")),
                port: free_port(),
                dir,
                nfiles,
                k,
                n,
                gate,
                child: None,
            }
        })
        .collect();
    for r in &mut runs {
        let _ = std::fs::remove_file(&r.out);
        // The shell waits at the gate (a builtin read: no program runs before the workload).
        let script = format!(
            "read _go < '{}'; exec '{}' '{}' {} {} {} 0",
            r.gate.display(),
            workload("files_io").display(),
            r.dir.display(),
            r.nfiles,
            r.k,
            r.n
        );
        let child = Command::new(sidecar_bin())
            .args(["run", "--probes", "files", "--listen"])
            .arg(format!("127.0.0.1:{}", r.port))
            .arg("--metrics-out")
            .arg(&r.out)
            .args(["--", "/bin/sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&r.log).unwrap())
            .spawn()
            .unwrap();
        r.child = Some(child);
    }
    for r in &runs {
        wait_for(
            "both sidecars serving",
            std::time::Duration::from_secs(30),
            || http_get(r.port, "/healthz", None).is_ok().then_some(()),
        );
    }
    let slots: Vec<Option<u32>> = runs
        .iter()
        .map(|r| {
            integration::shared_slot(&std::fs::read_to_string(&r.log).unwrap_or_default())
                .map(|(slot, _)| slot)
        })
        .collect();
    assert!(
        slots.iter().all(Option::is_some) && slots[0] != slots[1],
        "two slots of one shared kernel side: {slots:?}"
    );
    for r in &runs {
        std::fs::write(&r.gate, "go\n").unwrap();
    }
    let mut metrics = Vec::new();
    for r in &mut runs {
        let st = r.child.take().unwrap().wait().unwrap();
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        assert!(st.success(), "{}: {st}\n{log}", r.dir.display());
        let text = std::fs::read_to_string(&r.out).unwrap();
        let lint = promtool_check(&text);
        assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
        metrics.push(Metrics::parse(&text));
    }
    for (i, (r, m)) in runs.iter().zip(&metrics).enumerate() {
        let other = &runs[1 - i];
        for f in 0..r.nfiles {
            let p = format!("{}/f{f:02}", r.dir.display());
            for metric in [
                "ebpf_sidecar_file_write_bytes_total",
                "ebpf_sidecar_file_read_bytes_total",
            ] {
                assert_eq!(
                    m.get(metric, &[("kind", "file"), ("path", &p)]),
                    Some(bytes(r.nfiles, f) as f64),
                    "{metric} {p}"
                );
            }
        }
        let missing = format!("{}/missing", r.dir.display());
        assert_eq!(
            m.get(
                "ebpf_sidecar_file_open_errors_total",
                &[("path", &missing), ("errno", "ENOENT")]
            ),
            Some(r.k as f64),
            "{missing}"
        );
        assert_eq!(
            m.sum("ebpf_sidecar_file_syncs_total", &[("call", "fsync")]),
            r.n as f64,
            "{}",
            r.dir.display()
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_file_sync_duration_seconds_count",
                &[("call", "fsync")]
            ),
            r.n as f64
        );
        assert_eq!(
            m.sum("ebpf_sidecar_events_lost_total", &[("probe", "files")]),
            0.0
        );
        let theirs = other.dir.display().to_string();
        assert!(
            !m.text.contains(&theirs),
            "the other sidecar's workload leaked in:\n{}",
            m.text
        );
    }
}
