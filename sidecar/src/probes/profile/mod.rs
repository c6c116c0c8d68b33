//! Profile family: a continuous sampling profiler of the target (perf_event CPU clock, 49 Hz per
//! CPU by default). The kernel counts (pid, user stack, kernel stack, comm); a drain thread
//! symbolizes them once a second into one-second windows that every profile request reads, so
//! concurrent requests share one sampling session. Kernel side: `sidecar-ebpf/bpf/profile.bpf.c`.

mod drain;
pub mod pprof;
mod routes;

pub use routes::ROUTES;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, StackTraceMap};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::ProfileCfg;

use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::Metric;
use crate::symbolize::{Symbolizer, kallsyms};
use drain::Drain;

pub const SAMPLES: Metric = Metric::counter(
    "ebpf_sidecar_profile_samples",
    "CPU-clock samples taken while one of the target's tasks was running.",
);
pub const METRICS: &[Metric] = &[SAMPLES];

/// Slots of `profile_totals`.
const SAMPLES_SLOT: u32 = 0;
const LOST_SLOT: u32 = 1;

/// Seconds of history kept; the longest profile a request can ask for.
pub const MAX_SECONDS: u64 = 300;

/// Folded stacks (frames root first) with sample counts, per one-second window.
pub type Folded = HashMap<Vec<String>, u64>;

pub struct Store {
    windows: Mutex<VecDeque<(Instant, Folded)>>,
    pub hz: u64,
}

impl Store {
    /// Wait `seconds`, then merge the windows drained in the meantime.
    pub fn collect(&self, seconds: u64) -> Vec<(Vec<String>, u64)> {
        let start = Instant::now();
        std::thread::sleep(
            Duration::from_secs(seconds.min(MAX_SECONDS)) + Duration::from_millis(1100),
        );
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged: Folded = HashMap::new();
        for (_, folded) in w.iter().filter(|(at, _)| *at > start) {
            for (stack, n) in folded {
                *merged.entry(stack.clone()).or_default() += n;
            }
        }
        let mut v: Vec<_> = merged.into_iter().collect();
        v.sort();
        v
    }
}

pub struct Profile {
    /// Shared with the drain thread, which counts its failed reads against it.
    obj: Arc<Object>,
    store: Arc<Store>,
    drain: Mutex<Option<Drain>>,
}

/// Largest sizes of this slot's tables (16 MiB of stacks); profile.bpf.c declares the smallest.
const STACKS_MAX: u32 = 16384;
const COUNTS_MAX: u32 = 32768;

/// This slot's table sizes for `hz` samples per second on each of `cpus` CPUs. The drain empties
/// the counts every 250 ms (drain::DRAIN) and forgets the stacks never (the kernel reuses a
/// stack's place when another hashes there), so: counts for a second of samples (four drains'
/// worth); stacks (a user and a kernel one per sample) for two seconds of samples (eight
/// drains' worth), so that few of the stacks a drain reads were overwritten meanwhile. 49 Hz on 2 CPUs: 512 stacks (508 KiB)
/// and 256 counts, per target.
fn table_sizes(hz: u64, cpus: usize) -> (u32, u32) {
    let per_s = hz.saturating_mul(cpus.max(1) as u64);
    let size = |n: u64, min: u32, max: u32| {
        (n.min(u64::from(max)) as u32)
            .next_power_of_two()
            .clamp(min, max)
    };
    (
        size(per_s.saturating_mul(2 * 2), 512, STACKS_MAX),
        size(per_s, 256, COUNTS_MAX),
    )
}

/// The rate the perf events were opened at: on a shared kernel side where an earlier sidecar
/// attached them, theirs (in the pinned `profile_host`), else ours.
fn host_hz(ks: &crate::kernel_side::Handle, wanted: u64) -> u64 {
    let attached = ks
        .link_pin("profile", "profile_sample", 0)
        .is_some_and(|p| p.exists());
    if !attached {
        return wanted;
    }
    let hz = ks
        .map_pin("profile", "profile_host")
        .and_then(|pin| MapData::from_pin(pin).ok())
        .and_then(|d| Array::<MapData, u64>::try_from(aya::maps::Map::Array(d)).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .filter(|hz| *hz > 0);
    match hz {
        Some(hz) if hz != wanted => {
            tracing::warn!(
                "probe profile: the shared kernel side samples at {hz} Hz (the rate of the \
                 sidecar that attached the profiler first), not the {wanted} Hz asked for"
            );
            hz
        }
        Some(hz) => hz,
        None => wanted,
    }
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let family = "profile";
    let map_err = |map: &str, detail: String| ProbeError::Map {
        family,
        map: map.into(),
        detail,
    };
    let hz = host_hz(&opts.kernel_side, opts.profile_hz);
    let cpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(1);
    let (stacks_n, counts_n) = table_sizes(hz, cpus);
    let mut obj = Object::load_on(
        &opts.kernel_side,
        family,
        sidecar_ebpf::objects::PROFILE,
        &super::LoadOpts {
            inner_max_entries: &[("profile_stacks", stacks_n), ("profile_counts", counts_n)],
            ..Default::default()
        },
    )?;
    let (counts, stacks, config) = {
        let mut config: Array<MapData, ProfileCfg> = obj.take_slot_map_as("profile_config")?;
        let ns = std::fs::metadata("/proc/self/ns/pid")
            .map_err(|e| map_err("profile_config", e.to_string()))?;
        config
            .set(
                0,
                ProfileCfg {
                    pidns_dev: ns.dev(),
                    pidns_ino: ns.ino(),
                    generation: 0,
                    pad: 0,
                },
                0,
            )
            .map_err(|e| map_err("profile_config", e.to_string()))?;
        (
            obj.take_slot_map_as("profile_counts")?,
            obj.take_slot_map_as::<StackTraceMap<MapData>>("profile_stacks")?,
            config,
        )
    };
    // After this slot's config is in place: the program skips a slot without one.
    obj.attach_perf_event("profile_sample", hz)?;
    {
        let mut ebpf = obj.lock();
        let host = ebpf
            .map_mut("profile_host")
            .ok_or_else(|| map_err("profile_host", "missing".into()))?;
        let mut host: Array<&mut MapData, u64> =
            Array::try_from(host).map_err(|e| map_err("profile_host", e.to_string()))?;
        host.set(0, hz, 0)
            .map_err(|e| map_err("profile_host", e.to_string()))?;
    }
    let obj = Arc::new(obj);
    let drain = Drain {
        obj: obj.clone(),
        counts,
        stacks,
        config,
        // Read now: without CAP_SYSLOG (dropped after attach) kallsyms shows zero addresses.
        symbolizer: Symbolizer::new(kallsyms()),
    };
    Ok(Arc::new(Profile {
        obj,
        store: Arc::new(Store {
            windows: Mutex::new(VecDeque::new()),
            hz,
        }),
        drain: Mutex::new(Some(drain)),
    }))
}

impl Probe for Profile {
    fn name(&self) -> &'static str {
        "profile"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let samples = self.obj.maps().counter("profile_totals", SAMPLES_SLOT);
        SAMPLES.counter_series(enc, [(vec![], samples)])
    }

    fn lost_events(&self) -> u64 {
        self.obj.maps().counter("profile_totals", LOST_SLOT)
    }

    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        Some(routes::router(self.store.clone()))
    }

    fn start_events(&self, _sink: crate::events::EventSink) -> Result<(), ProbeError> {
        match self.drain.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(drain) => drain.spawn(self.store.clone()),
            None => Ok(()),
        }
    }
}

/// Collapsed-stack text (`frame;frame;frame count` per line), as flamegraph.pl and inferno read.
pub fn folded_text(stacks: &[(Vec<String>, u64)]) -> String {
    let mut out = String::new();
    for (frames, n) in stacks {
        let line: Vec<String> = frames.iter().map(|f| f.replace(';', ":")).collect();
        out.push_str(&format!("{} {n}\n", line.join(";")));
    }
    out
}

/// The profile family's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profiler sampling frequency, per CPU.
    #[arg(long, value_name = "HZ", default_value_t = 49, value_parser = clap::value_parser!(u64).range(1..=10000), global = true)]
    profile_hz: u64,

    /// Do not run the sampling profiler (same as leaving `profile` out of --probes).
    #[arg(long, global = true)]
    no_profile: bool,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        s.options.profile_hz = self.profile_hz;
        if self.no_profile {
            s.probes.retain(|p| p != "profile");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_follow_the_rate() {
        assert_eq!(table_sizes(49, 2), (512, 256));
        assert_eq!(table_sizes(99, 2), (1024, 256));
        assert_eq!(table_sizes(999, 2), (8192, 2048));
        assert_eq!(table_sizes(10_000, 64), (STACKS_MAX, COUNTS_MAX));
        assert_eq!(table_sizes(1, 1), (512, 256));
    }
}
