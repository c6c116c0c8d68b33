//! What the runtimes family attaches where: the BPF programs, the kernel slots their counts land
//! in, and the hooks the YAML packs (`packs.rs`) have no words for.

use super::discovery::Runtime;
use crate::usdt;

/// The family's uprobe programs (runtimes.bpf.c); each site gets one, with its spec as cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prog {
    Count,
    Begin,
    End,
    Call,
    /// A histogram of an argument's value (declared metrics).
    Value,
    /// Node's HTTP parser hook: requests by method (and path), timed to the first write.
    Http,
    /// Node <= 18 USDT http__*__request: requests by method (and url path), timed from here…
    UsdtHttp,
    /// … to http__*__response on the same fd.
    UsdtHttpDone,
}

impl Prog {
    pub(super) const ALL: [Prog; 8] = [
        Prog::Count,
        Prog::Begin,
        Prog::End,
        Prog::Call,
        Prog::Value,
        Prog::Http,
        Prog::UsdtHttp,
        Prog::UsdtHttpDone,
    ];
    pub(super) fn name(self) -> &'static str {
        match self {
            Prog::Count => "rt_count",
            Prog::Begin => "rt_begin",
            Prog::End => "rt_end",
            Prog::Call => "rt_call",
            Prog::Value => "rt_value",
            Prog::Http => "rt_http",
            Prog::UsdtHttp => "rt_usdt_http",
            Prog::UsdtHttpDone => "rt_usdt_http_done",
        }
    }
}

/// Pack entries: what each attached site feeds (the `slot` of its spec).
pub(super) mod slot {
    pub const PY_GC: u32 = 0;
    pub const PY_CALLS: u32 = 1;
    pub const PY_IMPORTS: u32 = 2;
    pub const JAVA_GC: u32 = 3;
    pub const JAVA_CLASSES: u32 = 4;
    pub const JAVA_THREADS: u32 = 5;
    pub const NODE_HTTP: u32 = 6;
    pub const NODE_GC: u32 = 7;
    pub const NODE_LAG: u32 = 8;
    pub const NODE_USDT_HTTP: u32 = 9;
    pub const NODE_USDT_GC: u32 = 10;
    /// RT_SLOT_NODE_USDT_CLIENT in runtimes.bpf.c.
    pub const NODE_USDT_CLIENT: u32 = 11;
}

#[derive(Clone, Copy)]
pub(super) enum Site {
    /// A USDT probe (all its sites).
    Usdt {
        provider: &'static str,
        probe: &'static str,
    },
    /// A function symbol, at entry or return, with arguments described as USDT specs.
    Symbol {
        name: &'static str,
        short: &'static str,
        ret: bool,
        args: &'static str,
    },
}

#[derive(Clone, Copy)]
pub(super) struct Hook {
    pub runtime: Runtime,
    pub site: Site,
    pub prog: Prog,
    pub slot: u32,
    pub label: Option<u32>,
    pub label2: Option<u32>,
    /// Only with --runtime-calls (function__entry fires on every call: costly).
    pub calls_only: bool,
}

const V8_GC: &str = "_ZN2v88internal4Heap24PerformGarbageCollectionENS0_16GarbageCollectorENS0_23GarbageCollectionReasonEPKc";

/// Hooks the YAML form of the packs (packs/*.yaml) has no words for: Node's USDT HTTP probes
/// (method and url strings, timed per fd) and stock Node's function symbols (argument specs on
/// symbols, dedicated programs).
pub(super) const BUILT_IN_HOOKS: &[Hook] = &[
    // Node <= 18 built --with-dtrace (src/node_dtrace.cc): http__{server,client}__request(req,
    // conn, remote, port, method, url, fd), http__{server,client}__response(conn, remote, port,
    // fd); its gc__start/gc__done are in packs/node.yaml.
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__server__request",
        },
        prog: Prog::UsdtHttp,
        slot: slot::NODE_USDT_HTTP,
        label: Some(4),
        label2: Some(5),
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__server__response",
        },
        prog: Prog::UsdtHttpDone,
        slot: slot::NODE_USDT_HTTP,
        label: None,
        label2: None,
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__client__request",
        },
        prog: Prog::UsdtHttp,
        slot: slot::NODE_USDT_CLIENT,
        label: Some(4),
        label2: Some(5),
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__client__response",
        },
        prog: Prog::UsdtHttpDone,
        slot: slot::NODE_USDT_CLIENT,
        label: None,
        label2: None,
        calls_only: false,
    },
    // Node's HTTP parser calls llhttp_should_keep_alive once per parsed message head, from its
    // on_headers_complete; the llhttp_t it gets holds type (offset 72: 1 request, 2 response)
    // and method (offset 73), stable across llhttp 6-9.
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: "llhttp_should_keep_alive",
            short: "llhttp_should_keep_alive",
            ret: false,
            args: "1@73(%rdi) 1@72(%rdi)",
        },
        prog: Prog::Http,
        slot: slot::NODE_HTTP,
        label: Some(0),
        label2: Some(1),
        calls_only: false,
    },
    // V8: every GC (scavenge, mark-compact, minor mark-compact) goes through
    // Heap::PerformGarbageCollection(collector, reason, …); `this` is rdi, collector esi.
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: V8_GC,
            short: "v8::internal::Heap::PerformGarbageCollection",
            ret: false,
            args: "4@%esi",
        },
        prog: Prog::Begin,
        slot: slot::NODE_GC,
        label: Some(0),
        label2: None,
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: V8_GC,
            short: "v8::internal::Heap::PerformGarbageCollection:return",
            ret: true,
            args: "",
        },
        prog: Prog::End,
        slot: slot::NODE_GC,
        label: None,
        label2: None,
        calls_only: false,
    },
];

/// File offset in a stock node binary (`data`) where the HTTP hook attaches (benchmarks compare
/// a bare uprobe there with the pack).
pub fn node_http_site(data: &[u8]) -> Result<u64, String> {
    let Some(Site::Symbol {
        name, args, ret, ..
    }) = BUILT_IN_HOOKS
        .iter()
        .find(|h| h.prog == Prog::Http)
        .map(|h| h.site)
    else {
        return Err("no HTTP hook".into());
    };
    let args = usdt::args::parse_args(args).map_err(|e| e.to_string())?;
    usdt::place::function_site(data, name, &args, ret)
        .map(|(site, _)| site)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse() {
        for h in crate::probes::runtimes::packs::HOOKS.iter() {
            if let Site::Symbol { args, .. } = h.site {
                let a = usdt::args::parse_args(args).unwrap();
                for l in [h.label, h.label2].into_iter().flatten() {
                    assert!((l as usize) < a.len());
                }
            }
        }
    }
}
