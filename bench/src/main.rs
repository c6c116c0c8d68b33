//! Overhead benchmarks, each side by side with the peer its issue names, in one run.
//!
//!   cargo run --release -p bench -- foundation [--calls N] [--repeat R]
//!   cargo run --release -p bench -- disk [--mib M] [--reads N] [--repeat R]
//!   cargo run --release -p bench -- net [--repeat R] [--mib M] [--conns N] [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- stack [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- security [--execs N] [--connects N] [--rounds R]
//!   cargo run --release -p bench -- cpu [--iterations N] [--repeat R] [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- custom [--entries N] [--rounds R]
//!   cargo run --release -p bench -- budget [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- protocols [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- https [--seconds S] [--rounds R]
//!   cargo run --release -p bench -- bpf-cc SRC.bpf.c OUT.o   (the probes' clang recipe, for scripts)
//!
//! Prints a markdown table and writes it to bench/results/<name>.md. Needs root, clang/gcc,
//! bpftrace and bpftool; builds the sidecar first with `cargo build --release -p sidecar`.

mod budget;
mod cpu;
mod custom;
mod disk;
mod foundation;
mod https;
mod kernel_side;
mod net;
mod node;
mod protocols;
mod runtimes;
mod security;
mod stack;
mod util;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first() else {
        anyhow::bail!("usage: bench foundation [--calls N] [--repeat R]");
    };
    let opt = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
                .parse()?),
            None => Ok(default),
        }
    };
    if which == "bpf-cc" {
        // For bench/net_pkt_cost.sh: one clang recipe, also for scripts.
        let [src, obj] = &args[1..] else {
            anyhow::bail!("usage: bench bpf-cc SRC.bpf.c OUT.o");
        };
        let include = util::repo_root().join("sidecar-ebpf/include");
        integration::compile_bpf(
            integration::Recipe::Own,
            &[&include],
            src.as_ref(),
            obj.as_ref(),
        );
        return Ok(());
    }
    let report = match which.as_str() {
        "foundation" => foundation::run(opt("--calls", 5_000_000)?, opt("--repeat", 5)? as usize)?,
        "disk" => disk::run(
            opt("--mib", 512)?,
            opt("--reads", 200_000)?,
            opt("--repeat", 5)? as usize,
        )?,
        "net" => net::run(
            opt("--repeat", 3)? as usize,
            opt("--mib", 2000)?,
            opt("--conns", 10_000)?,
            opt("--seconds", 10)?,
            opt("--rounds", 5)? as usize,
        )?,
        "security" => security::run(
            opt("--execs", 5_000)?,
            opt("--connects", 20_000)?,
            opt("--rounds", 4)? as usize,
        )?,
        "cpu" => cpu::run(
            opt("--iterations", 6_000_000_000)?,
            opt("--repeat", 3)? as usize,
            opt("--seconds", 10)?,
            opt("--rounds", 5)? as usize,
        )?,
        "kernel-side" => {
            kernel_side::run(opt("--calls", 2_000_000)?, opt("--repeat", 5)? as usize)?
        }
        "node" => node::run(opt("--calls", 2_000_000)?, opt("--repeat", 5)? as usize)?,
        "stack" => stack::run(opt("--seconds", 30)?, opt("--rounds", 3)? as usize)?,
        "budget" => budget::run(opt("--seconds", 6)?, opt("--rounds", 3)? as usize)?,
        "protocols" => protocols::run(opt("--seconds", 10)?, opt("--rounds", 5)? as usize)?,
        "https" => https::run(opt("--seconds", 8)?, opt("--rounds", 5)? as usize)?,
        "custom" => custom::run(opt("--entries", 10_000)?, opt("--rounds", 30)? as usize)?,
        "runtimes" => runtimes::run(opt("--calls", 1_000_000)?, opt("--repeat", 3)? as usize)?,
        // Only the node app tables of `runtimes` (stock node 20 and node 18 --with-dtrace).
        "runtimes-node" => runtimes::node_tables(opt("--rounds", 3)? as usize)?,
        other => anyhow::bail!(
            "unknown benchmark {other:?} (known: foundation, budget, protocols, https, kernel-side, node, disk, net, stack, security, cpu, runtimes, runtimes-node, custom)"
        ),
    };
    print!("{report}");
    let path = util::repo_root().join(format!("bench/results/{which}.md"));
    std::fs::write(&path, &report)?;
    eprintln!("written to {}", path.display());
    Ok(())
}
