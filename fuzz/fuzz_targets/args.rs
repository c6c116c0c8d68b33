//! USDT argument specs (`-4@-20(%rbp) 8@%rax …`) and the uprobe placement decoder: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(args) = sidecar::usdt::args::parse_args(s)
    {
        for a in &args {
            let _ = a.to_kernel();
        }
        let _ = sidecar::usdt::place::entry_offset(data, &args, true);
    }
    let _ = sidecar::usdt::place::entry_offset(data, &[], false);
});
