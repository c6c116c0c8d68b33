//! Where to put a function uprobe so that a hit costs one trap.
//!
//! On a hit the kernel either emulates the probed instruction (nops, `push reg`, relative
//! `jmp`/`jcc`/`call`) or copies it out of line and single-steps it: a second trap, measured at
//! about 20 µs per hit in the VM this was developed on against about 1 µs for an emulated one.
//! A function's first instruction is often neither (`xor %eax,%eax`, `cmpb $0,x(%rip)`), so the
//! probe moves forward to the first emulated instruction of the entry's straight-line prefix,
//! provided nothing before it changes what the probe reads: the registers of its argument specs,
//! the stack pointer (a return probe takes the return address at `(%rsp)`), or memory.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};

use super::args::{Arg, Location, pt_regs_offset};

/// Instructions looked at past the entry (a prologue's straight-line part is short).
const MAX_INSNS: usize = 8;

/// The `struct pt_regs` offset of a 64-bit general register.
fn reg_offset(r: Register) -> Option<u16> {
    let name = format!("{:?}", r.full_register()).to_ascii_lowercase();
    pt_regs_offset(&name)
}

/// Whether the kernel's x86 uprobe code emulates this instruction (arch/x86/kernel/uprobes.c:
/// branch_setup_xol_ops for rel jmp/jcc/call and nops, push_setup_xol_ops for `push reg`).
fn emulated(i: &iced_x86::Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::Nop => true,
        Mnemonic::Push => i.op_count() == 1 && i.op0_kind() == OpKind::Register,
        Mnemonic::Call => i.is_call_near() && !i.is_call_near_indirect(),
        _ => i.is_jmp_short_or_near() || i.is_jcc_short_or_near(),
    }
}

/// Byte offset from the function's entry at which to attach, for `code` (the function's first
/// bytes), a probe reading `args` (and the return address when `ret`). 0 when no emulated
/// instruction is reachable safely: the entry itself.
pub fn entry_offset(code: &[u8], args: &[Arg], ret: bool) -> usize {
    let mut needed: Vec<u16> = Vec::new();
    let mut reads_memory = false;
    for a in args {
        match a.loc {
            Location::Const(_) => {}
            Location::Reg(r) => needed.push(r),
            Location::Deref { reg, .. } => {
                needed.push(reg);
                reads_memory = true;
            }
            Location::Sib { base, index, .. } => {
                needed.extend([base, index]);
                reads_memory = true;
            }
        }
    }
    let rsp = pt_regs_offset("rsp").unwrap_or(152);
    if ret {
        needed.push(rsp);
    }
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for _ in 0..MAX_INSNS {
        if !decoder.can_decode() {
            break;
        }
        let at = decoder.position();
        let i = decoder.decode();
        if i.code() == Code::INVALID {
            break;
        }
        if emulated(&i) {
            return at;
        }
        if i.flow_control() != FlowControl::Next {
            break;
        }
        let used = info.info(&i);
        let clobbers = used.used_registers().iter().any(|u| {
            matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) && reg_offset(u.register()).is_some_and(|o| needed.contains(&o))
        });
        let writes_memory = used.used_memory().iter().any(|m| {
            matches!(
                m.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        });
        if clobbers || (writes_memory && (reads_memory || ret)) {
            break;
        }
    }
    0
}

/// File offset of a uprobe on function `name` of the ELF file `data` reading `args` (and the
/// return address when `ret`): the symbol, moved to its first emulated instruction when that is
/// safe (see [`entry_offset`]). Also how far it moved.
pub fn function_site(
    data: &[u8],
    name: &str,
    args: &[Arg],
    ret: bool,
) -> Result<(u64, u64), super::UsdtError> {
    let off = super::symbol_offset(data, name)?;
    let code = data.get(off as usize..).unwrap_or(&[]);
    let moved = entry_offset(&code[..code.len().min(64)], args, ret) as u64;
    Ok((off + moved, moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usdt::args::parse_args;

    #[test]
    fn moves_to_the_first_emulated_instruction() {
        // node 20's llhttp_should_keep_alive: xor %eax,%eax; cmpb $0,0x4a(%rdi);
        // movzwl 0x52(%rdi),%ecx; je ...
        let code = [
            0x31, 0xc0, 0x80, 0x7f, 0x4a, 0x00, 0x0f, 0xb7, 0x4f, 0x52, 0x74, 0x5c, 0x80, 0x7f,
        ];
        let args = parse_args("1@73(%rdi) 1@72(%rdi)").unwrap();
        assert_eq!(entry_offset(&code, &args, false), 10);
        // A return probe may move too: nothing before the je touches %rsp.
        assert_eq!(entry_offset(&code, &[], true), 10);
        // ...but not past an instruction that overwrites a register the probe reads.
        let args = parse_args("4@%ecx").unwrap();
        assert_eq!(entry_offset(&code, &args, false), 0);
    }

    #[test]
    fn push_at_entry_stays() {
        // push %rbp; mov %rsp,%rbp
        assert_eq!(entry_offset(&[0x55, 0x48, 0x89, 0xe5], &[], true), 0);
        // glibc epoll_pwait: cmpb $0,x(%rip); mov %ecx,%r10d; je
        let code = [
            0x80, 0x3d, 0x91, 0x29, 0x0d, 0x00, 0x00, 0x41, 0x89, 0xca, 0x74, 0x1c,
        ];
        assert_eq!(entry_offset(&code, &[], true), 10);
    }

    #[test]
    fn garbage_is_the_entry() {
        assert_eq!(entry_offset(&[], &[], false), 0);
        assert_eq!(entry_offset(&[0x0f, 0xff, 0xff, 0xff], &[], false), 0);
        // ret: stop there.
        assert_eq!(entry_offset(&[0x31, 0xc0, 0xc3, 0x90], &[], false), 0);
        // A store before the jump while the probe reads memory: stay at the entry.
        let store_then_jmp = [0x48, 0x89, 0x07, 0xeb, 0x00]; // mov %rax,(%rdi); jmp
        let args = parse_args("8@(%rsi)").unwrap();
        assert_eq!(entry_offset(&store_then_jmp, &args, false), 0);
        assert_eq!(entry_offset(&store_then_jmp, &[], false), 3);
    }
}

/// Whether the instruction at the start of `code` is one the kernel emulates (a uprobe there
/// costs one trap, not a trap and a single step).
pub fn emulated_at(code: &[u8]) -> bool {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    if !decoder.can_decode() {
        return false;
    }
    let i = decoder.decode();
    i.code() != Code::INVALID && emulated(&i)
}

/// The file offset of the first direct near `call` on the fall-through path of the function at
/// file offset `at` of `data` (within [`MAX_CALL_SEARCH`] instructions), or None. Offsets stand
/// for addresses: a near call's target is in the caller's segment, where both differ by the same
/// amount.
pub fn first_call_target(data: &[u8], at: u64) -> Option<u64> {
    let start = usize::try_from(at).ok()?;
    let code = data.get(start..)?;
    let code = &code[..code.len().min(256)];
    let mut decoder = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    for _ in 0..MAX_CALL_SEARCH {
        if !decoder.can_decode() {
            return None;
        }
        let i = decoder.decode();
        if i.code() == Code::INVALID {
            return None;
        }
        if i.is_call_near() && !i.is_call_near_indirect() {
            return Some(i.near_branch_target());
        }
        // Straight on through conditional branches (their fall-through), nothing else.
        if !matches!(
            i.flow_control(),
            FlowControl::Next | FlowControl::ConditionalBranch
        ) {
            return None;
        }
    }
    None
}

/// Instructions looked at for a function's first call (a wrapper's argument checks are short).
const MAX_CALL_SEARCH: usize = 16;

#[cfg(test)]
mod call_tests {
    use super::*;

    #[test]
    fn first_call_of_a_wrapper() {
        // sub $0x18,%rsp; test %edx,%edx; js +2; mov %rsp,%rcx; call +0x100 (from 0x1000)
        let code = [
            0x48, 0x83, 0xec, 0x18, 0x85, 0xd2, 0x78, 0x02, 0x48, 0x89, 0xe1, 0xe8, 0x00, 0x01,
            0x00, 0x00, 0xc3,
        ];
        let mut data = vec![0u8; 0x1000];
        data.extend_from_slice(&code);
        assert_eq!(first_call_target(&data, 0x1000), Some(0x1000 + 16 + 0x100));
        assert!(!emulated_at(&code));
        assert!(emulated_at(&[0x41, 0x55])); // push %r13
        // ret first: no call on the way
        assert_eq!(first_call_target(&[0xc3], 0), None);
    }
}
