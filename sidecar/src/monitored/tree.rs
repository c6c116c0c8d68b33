//! `--target-tree`: a process and its descendants, as the kernel sees them now. The kernel then
//! follows forks and frees itself (sidecar.bpf.h); this is only the starting set, and the check
//! of a `--target-pid` cgroup for processes outside the pid's tree.

use std::collections::HashMap;

/// Parent pid of every process visible in /proc (kernel-generated files, read with a bound).
fn parents() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = ppid_of(pid) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Field 4 of /proc/<pid>/stat, after the comm (which may hold spaces and parentheses).
fn ppid_of(pid: u32) -> Option<u32> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let s = std::str::from_utf8(&buf[..n]).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process below it now (host pids). Empty when `root` does not exist.
pub fn members(root: u32) -> Vec<u32> {
    let parents = parents();
    if !parents.contains_key(&root) {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied().filter(|&p| p != root));
        }
        i += 1;
    }
    out
}

/// Whether this process sees pids as the kernel's BPF helpers report them (the initial pid
/// namespace): its NSpid line has a single entry.
pub fn in_host_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|v| v.split_whitespace().count() == 1)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_holds_self_and_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let m = members(std::process::id());
        assert_eq!(m[0], std::process::id());
        assert!(m.contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(members(u32::MAX).is_empty());
    }
}
