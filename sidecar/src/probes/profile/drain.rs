//! The drain thread: four times a second, flip the kernel's generation and move the previous
//! one's counts out of `profile_counts`, symbolized, into the store's one-second windows. The
//! short drain keeps the slot's tables small (see `table_sizes`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, StackTraceMap};
use sidecar_ebpf::{ProfileCfg, ProfileKey};

use super::{Folded, MAX_SECONDS, Store};
use crate::metrics::comm_label;
use crate::probes::{Object, ProbeError};
use crate::symbolize::Symbolizer;

/// How often the kernel's counts are moved out, and how many of those make a window.
pub const DRAIN: Duration = Duration::from_millis(250);
const DRAINS_PER_WINDOW: u32 = 4;

/// The maps the drain owns (taken out of the object at load: it writes them from its own
/// thread), and the object its failed reads are counted against.
pub struct Drain {
    pub obj: Arc<Object>,
    pub counts: BpfHashMap<MapData, ProfileKey, u64>,
    pub stacks: StackTraceMap<MapData>,
    pub config: Array<MapData, ProfileCfg>,
    pub symbolizer: Symbolizer,
}

impl Drain {
    /// Start the thread that drains every DRAIN and puts a window into `store` every second.
    pub fn spawn(mut self, store: Arc<Store>) -> Result<(), ProbeError> {
        std::thread::Builder::new()
            .name("profile-drain".into())
            .spawn(move || {
                let mut ticks = 0u64;
                loop {
                    let mut folded = Folded::new();
                    for _ in 0..DRAINS_PER_WINDOW {
                        std::thread::sleep(DRAIN);
                        for (stack, n) in self.once() {
                            *folded.entry(stack).or_default() += n;
                        }
                    }
                    let mut w = store.windows.lock().unwrap_or_else(|p| p.into_inner());
                    w.push_back((Instant::now(), folded));
                    while w.len() as u64 > MAX_SECONDS + 2 {
                        w.pop_front();
                    }
                    drop(w);
                    ticks += 1;
                    if ticks.is_multiple_of(30) {
                        self.symbolizer.forget_processes();
                    }
                }
            })
            .map(drop)
            .map_err(|e| ProbeError::Map {
                family: "profile",
                map: "profile_counts".into(),
                detail: e.to_string(),
            })
    }

    /// Flip the generation, then move the previous one's counts out of the kernel. Nothing is
    /// drained when the flip fails: the kernel would still be adding to what is taken out.
    fn once(&mut self) -> Folded {
        const CONFIG: &str = "profile_config";
        const COUNTS: &str = "profile_counts";
        let mut cfg = match self.config.get(&0, 0) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.obj.read_error(CONFIG, e);
                return Folded::new();
            }
        };
        let old = cfg.generation;
        cfg.generation = cfg.generation.wrapping_add(1);
        if let Err(e) = self.config.set(0, cfg, 0) {
            self.obj.read_error(CONFIG, e);
            return Folded::new();
        }
        let mut entries: Vec<(ProfileKey, u64)> = Vec::new();
        for r in self.counts.iter() {
            match r {
                Ok((k, n)) if k.generation == old => entries.push((k, n)),
                Ok(_) => {}
                Err(e) => self.obj.read_error(COUNTS, e),
            }
        }
        let mut folded: Folded = HashMap::new();
        for (k, n) in &entries {
            if let Err(e) = self.counts.remove(k) {
                self.obj.read_error(COUNTS, e);
            }
            let mut frames = vec![comm_label(&k.comm)];
            frames.extend(self.frames(k.pid, k.user_stack, true));
            frames.extend(self.frames(k.pid, k.kernel_stack, false));
            *folded.entry(frames).or_default() += n;
        }
        folded
    }

    /// The frames of stack `id`, root first; none when the kernel could not take that stack
    /// (a negative id) or it cannot be read.
    fn frames(&mut self, pid: u32, id: i32, user: bool) -> Vec<String> {
        let Ok(id) = u32::try_from(id) else {
            return Vec::new();
        };
        let st = match self.stacks.get(&id, 0) {
            Ok(st) => st,
            Err(e) => {
                self.obj.read_error("profile_stacks", e);
                return Vec::new();
            }
        };
        let mut frames: Vec<String> = st
            .frames()
            .iter()
            .map(|f| {
                if user {
                    self.symbolizer.user(pid, f.ip)
                } else {
                    self.symbolizer.kernel(f.ip)
                }
            })
            .collect();
        frames.reverse();
        frames
    }
}
