//! Custom probes: a user's clang-compiled CO-RE object (`--probe-file`) loaded next to the
//! built-in families, described by a YAML file (`--probe-config`): which programs attach where,
//! which maps become metrics (struct values decoded with the object's BTF, one metric per chosen
//! field), which ring buffers or perf event arrays are events on `/events`.
//!
//! A custom probe that cannot be read, validated, loaded or attached is reported
//! (`ebpf_sidecar_probe_up{probe="custom:<name>"} 0`, the reason in the log) and skipped: it
//! never stops the built-in families. Reference: docs/families/custom.md.

mod attach;
pub mod btf;
pub mod config;
pub mod decode;
mod encode;
mod events;
mod maps;
mod plan;
pub mod rawmap;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aya::programs::ProgramFd;
use prometheus_client::encoding::DescriptorEncoder;
use thiserror::Error;

use self::attach::{Attached, PerTarget};
use self::btf::Btf;
use self::config::{Config, Decoder};
use self::decode::DecodeCtx;
use self::encode::MetricPlan;
use self::events::{EventPlan, LostCounter, Reader, Source};
use self::plan::Names;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::events::EventSink;
use crate::monitored::Resolved;

#[derive(Debug, Error)]
pub enum CustomError {
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    #[error("custom probe {probe}: object {file}: {msg}")]
    Object {
        probe: String,
        file: String,
        msg: String,
    },
    #[error("custom probe {probe}: map {map}: {msg}")]
    Map {
        probe: String,
        map: String,
        msg: String,
    },
    #[error("custom probe {probe}: program {program}: {msg}")]
    Program {
        probe: String,
        program: String,
        msg: String,
    },
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// One `--probe-file`/`--probe-config` pair.
#[derive(Clone, Debug)]
pub struct Spec {
    pub object: PathBuf,
    pub config: PathBuf,
}

impl Spec {
    /// The probe's name before the YAML is read (its file name), for reporting a YAML that
    /// cannot be parsed.
    pub fn fallback_name(&self) -> String {
        let f = self
            .config
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        f.trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .to_string()
    }
}

/// Read and check a YAML file (no kernel involved): syntax and schema, with the line.
pub fn read_config(path: &Path) -> Result<Config, CustomError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CustomError::Config {
        file: file.clone(),
        msg: format!("cannot read: {e}"),
    })?;
    let cfg: Config = serde_yaml::from_str(&text).map_err(|e| CustomError::Config {
        file: match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.clone(),
        },
        msg: format!("{e}"),
    })?;
    Ok(cfg)
}

fn leak(s: String) -> &'static str {
    // A handful of names per user probe, alive for the whole run.
    Box::leak(s.into_boxed_str())
}

/// Names a custom probe's errors: the probe, its object file and its YAML.
struct Ctx {
    probe: String,
    object: String,
    config: String,
}

impl Ctx {
    fn config(&self, msg: String) -> CustomError {
        CustomError::Config {
            file: self.config.clone(),
            msg,
        }
    }

    fn object(&self, msg: String) -> CustomError {
        CustomError::Object {
            probe: self.probe.clone(),
            file: self.object.clone(),
            msg,
        }
    }

    fn map(&self, map: &str, msg: String) -> CustomError {
        CustomError::Map {
            probe: self.probe.clone(),
            map: map.to_string(),
            msg,
        }
    }

    fn program(&self, program: &str, msg: String) -> CustomError {
        CustomError::Program {
            probe: self.probe.clone(),
            program: program.to_string(),
            msg,
        }
    }
}

pub struct CustomProbe {
    name: &'static str,
    short: String,
    obj: Object,
    btf: Arc<Btf>,
    metrics: Vec<MetricPlan>,
    events: Vec<Arc<EventPlan>>,
    sources: Mutex<Vec<Source>>,
    lost: Arc<AtomicU64>,
    lost_maps: Vec<LostCounter>,
    decode: Arc<DecodeCtx>,
    per_target: Vec<PerTarget>,
    uprobe_fds: HashMap<String, ProgramFd>,
    attached: Mutex<Attached>,
    filter_map: bool,
    filter_globals: bool,
    /// The target filter the `const volatile` globals were filled with.
    globals_for: Option<crate::monitored::Filter>,
}

/// What `load` hands back: the probe and the capabilities it needs after attaching.
pub struct Loaded {
    pub probe: Arc<dyn Probe>,
    pub keeps: Vec<caps::Capability>,
}

/// Load one custom probe. `target` is the target as resolved at start (it fills the object's
/// `target_cgroup_id` / `target_pidns_ino` and places per-target attachments).
pub fn load(
    spec: &Spec,
    opts: &Options,
    target: Option<&Resolved>,
) -> Result<Loaded, (String, CustomError)> {
    let mut probe_name = spec.fallback_name();
    let cfg = read_config(&spec.config).map_err(|e| (probe_name.clone(), e))?;
    if let Some(n) = &cfg.name {
        probe_name = n.clone();
    }
    match load_with(spec, &cfg, &probe_name, opts, target, false) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => unreachable!("only a check stops before loading"),
        Err(e) => Err((probe_name, e)),
    }
}

/// Check a custom probe without the kernel: the YAML against the object's BTF (maps, fields,
/// decoders, sizes, names). Returns the probe's name. `ebpf-sidecar custom check`.
pub fn check(spec: &Spec) -> Result<String, (String, CustomError)> {
    let mut probe_name = spec.fallback_name();
    let cfg = read_config(&spec.config).map_err(|e| (probe_name.clone(), e))?;
    if let Some(n) = &cfg.name {
        probe_name = n.clone();
    }
    match load_with(spec, &cfg, &probe_name, &Options::default(), None, true) {
        Ok(_) => Ok(probe_name),
        Err(e) => Err((probe_name, e)),
    }
}

fn load_with(
    spec: &Spec,
    cfg: &Config,
    short: &str,
    opts: &Options,
    target: Option<&Resolved>,
    check_only: bool,
) -> Result<Option<Loaded>, CustomError> {
    let ctx = Ctx {
        probe: short.to_string(),
        object: spec.object.display().to_string(),
        config: spec.config.display().to_string(),
    };
    if short.is_empty()
        || !short
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ctx.config(format!(
            "probe name {short:?} must be letters, digits, _ or - (it names the probe in ebpf_sidecar_probe_up and /events)"
        )));
    }
    let bytes = std::fs::read(&spec.object).map_err(|e| ctx.object(format!("cannot read: {e}")))?;
    let btf = Btf::from_elf(&bytes).map_err(|e| ctx.object(e.to_string()))?;
    let defs = btf.maps();

    // Validate everything the YAML says against the BTF before touching the kernel.
    let mut names = Names::default();
    let mut pending = Vec::new();
    for m in &cfg.metrics {
        let d = plan::find_def(&ctx, &defs, &m.map)?;
        pending.push(plan::metric(&ctx, &btf, d, m, opts.top_n, &mut names)?);
    }
    let event_plans = events::plan(&ctx, &btf, &defs, cfg, opts.top_n, &mut names)?;
    let per_target = attach::plan(&ctx, cfg)?;
    let globals = attach::target_globals(&ctx, &btf, target)?;
    let filter_map = defs.iter().any(|d| d.name == sidecar_ebpf::SLOTS_MAP);
    let filter_globals = !globals.is_empty();
    if check_only {
        return Ok(None);
    }
    if !filter_map && !filter_globals {
        tracing::warn!(
            probe = short,
            "the object neither uses sidecar_in_target() (sidecar.bpf.h) nor declares target_cgroup_id: it sees the whole host"
        );
    }
    let name = leak(format!("custom:{short}"));
    let gl: Vec<(&str, &[u8])> = globals.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let mut obj = Object::load_with(name, &bytes, &gl)?;
    let uprobe_fds = attach::programs(&ctx, &mut obj, cfg)?;
    let (metrics, sources, lost_maps) = {
        let mut ebpf = obj.lock();
        let metrics = maps::open_metrics(&ctx, &mut ebpf, cfg, pending)?;
        let (sources, lost_maps) = events::open(&ctx, &mut ebpf, cfg, event_plans)?;
        (metrics, sources, lost_maps)
    };
    let keeps = attach::keeps(&per_target);
    let probe = CustomProbe {
        name,
        short: short.to_string(),
        obj,
        btf: Arc::new(btf),
        metrics,
        events: sources.iter().map(|(p, _)| p.clone()).collect(),
        sources: Mutex::new(sources),
        lost: Arc::new(AtomicU64::new(0)),
        lost_maps,
        decode: Arc::new(DecodeCtx::new(needs_kallsyms(cfg))),
        per_target,
        uprobe_fds,
        attached: Mutex::new(Attached::default()),
        filter_map,
        filter_globals,
        globals_for: target.map(|t| t.filter),
    };
    // Attachments in the target's files and cgroup: a failure here is this probe's failure.
    // A target not running yet gets them when it appears (on_target).
    if target.is_some() {
        probe
            .attach_per_target(target)
            .map_err(|(program, msg)| ctx.program(&program, msg))?;
    }
    Ok(Some(Loaded {
        probe: Arc::new(probe),
        keeps,
    }))
}

/// Whether a label or event field is decoded as a kernel symbol (/proc/kallsyms is read at
/// start only then).
fn needs_kallsyms(cfg: &Config) -> bool {
    cfg.metrics
        .iter()
        .flat_map(|m| m.labels.iter())
        .chain(
            cfg.events
                .iter()
                .filter_map(|e| e.count.as_ref())
                .flat_map(|c| c.labels.iter()),
        )
        .any(|l| l.decoder == Decoder::Ksym)
        || cfg
            .events
            .iter()
            .any(|e| e.decoders.values().any(|d| *d == Decoder::Ksym))
}

impl Probe for CustomProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        *self
            .decode
            .target_pid
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = target.and_then(|t| t.pid);
        if self.filter_map {
            if let Err(e) = self.obj.set_target(target.map(|t| &t.filter)) {
                tracing::error!(probe = self.name, "setting the target filter: {e}");
            }
        } else if self.filter_globals
            && let Some(t) = target
            && self.globals_for != Some(t.filter)
        {
            tracing::warn!(
                probe = self.name,
                "the target moved, but target_cgroup_id/target_pidns_ino were fixed at load: use sidecar_in_target() (sidecar.bpf.h) to follow restarts"
            );
        }
        // A broken user probe must not stop the sidecar: attach failures after start are logged.
        if let Some(t) = target
            && let Err((program, msg)) = self.attach_per_target(Some(t))
        {
            tracing::error!(probe = self.name, program, "re-attaching: {msg}");
        }
        Ok(())
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        for m in &self.metrics {
            match m.map.dump() {
                Ok(dump) => m.encode(&self.decode, &dump, enc)?,
                // Counted against the probe (its probe_up reads 0 for this scrape).
                Err(e) => self.obj.read_error(&m.map_name, e),
            }
        }
        for e in &self.events {
            if let Some(c) = &e.count {
                c.encode(enc)?;
            }
        }
        Ok(())
    }

    fn lost_events(&self) -> u64 {
        let mut in_kernel = 0;
        for (name, m) in &self.lost_maps {
            match m.dump() {
                Ok(d) => {
                    in_kernel += d
                        .values
                        .chunks(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .sum::<u64>()
                }
                Err(e) => self.obj.read_error(name, e),
            }
        }
        self.lost.load(Ordering::Relaxed) + in_kernel
    }

    fn start_events(&self, sink: EventSink) -> Result<(), ProbeError> {
        let sources = std::mem::take(&mut *self.sources.lock().unwrap_or_else(|p| p.into_inner()));
        for (plan, src) in sources {
            let reader = Reader {
                kind: self.short.clone(),
                plan,
                btf: self.btf.clone(),
                decode: self.decode.clone(),
                lost: self.lost.clone(),
                sink: sink.clone(),
            };
            reader.spawn(self.name, src)?;
        }
        Ok(())
    }
}

/// Write the headers a custom probe includes into `dir`; returns the files written.
pub fn write_headers(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use sidecar_ebpf::headers as h;
    use std::io::Read;
    std::fs::create_dir_all(dir)?;
    let mut vmlinux = Vec::new();
    flate2::read::GzDecoder::new(h::VMLINUX_H_GZ).read_to_end(&mut vmlinux)?;
    let files: [(&str, &[u8]); 4] = [
        ("vmlinux.h", &vmlinux),
        ("sidecar.bpf.h", h::SIDECAR_BPF_H.as_bytes()),
        ("sidecar.h", h::SIDECAR_H.as_bytes()),
        ("usdt.bpf.h", h::USDT_BPF_H.as_bytes()),
    ];
    let mut out = Vec::new();
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::write(&p, data)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_name_falls_back_to_the_file() {
        let s = Spec {
            object: "a.bpf.o".into(),
            config: "/x/tcp-lat.yaml".into(),
        };
        assert_eq!(s.fallback_name(), "tcp-lat");
    }
}
