//! ebpf-sidecar: attach to a running container (or pid, or command) and export what its
//! processes do as Prometheus metrics, from kernel probes aggregated in the kernel.

pub mod app;
pub mod caps;
pub mod events;
pub mod export;
pub mod governor;
pub mod http_path;
pub mod kernel_side;
pub mod metrics;
pub mod monitored;
pub mod node;
pub mod output;
pub mod probes;
pub mod seccomp;
pub mod symbolize;
pub mod tables;
pub mod usdt;
