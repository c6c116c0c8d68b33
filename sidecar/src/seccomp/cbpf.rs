//! A classic-BPF interpreter for seccomp programs, run symbolically: for one syscall number and
//! architecture it finds every value the program can return, whatever the call's arguments.
//!
//! The syscall number and the architecture are known; the instruction pointer and the six
//! arguments are not. A comparison that involves them explores both outcomes, so the answer is
//! the set of returns over all paths. Facts learnt on a path about a word of `seccomp_data`
//! (equal to, above, below a constant, bits known clear) prune the branches that path can no
//! longer take, so a program that tests one argument against several values does not produce
//! returns no call could reach. The pruning is conservative: arithmetic on an argument gives a
//! value nothing is known about, and both outcomes of a test on it are kept. So the set may hold
//! a return no call reaches (then a caller says "depends on arguments" where the answer is in
//! fact fixed), never miss one: a single return is certain.
//!
//! Only the instructions the kernel accepts in a seccomp filter are interpreted
//! (`seccomp_check_filter` in kernel/seccomp.c): loads of `seccomp_data` words, immediates,
//! scratch memory, the ALU, forward jumps, and returns. Anything else is an error, as it would be
//! for the kernel.

use std::collections::BTreeSet;

use thiserror::Error;

/// One instruction, as `struct sock_filter` in linux/filter.h (the layout ptrace hands back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl SockFilter {
    pub const fn stmt(code: u16, k: u32) -> Self {
        Self {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Self { code, jt, jf, k }
    }
}

// Opcode fields (linux/bpf_common.h, linux/filter.h).
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_ST: u16 = 0x02;
pub const BPF_STX: u16 = 0x03;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
pub const BPF_W: u16 = 0x00;
pub const BPF_IMM: u16 = 0x00;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_MEM: u16 = 0x60;
pub const BPF_LEN: u16 = 0x80;
pub const BPF_ADD: u16 = 0x00;
pub const BPF_SUB: u16 = 0x10;
pub const BPF_MUL: u16 = 0x20;
pub const BPF_DIV: u16 = 0x30;
pub const BPF_OR: u16 = 0x40;
pub const BPF_AND: u16 = 0x50;
pub const BPF_LSH: u16 = 0x60;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_NEG: u16 = 0x80;
pub const BPF_XOR: u16 = 0xa0;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
pub const BPF_A: u16 = 0x10;
pub const BPF_TAX: u16 = 0x00;
pub const BPF_TXA: u16 = 0x80;

/// The kernel's limit on one program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words (BPF_MEMWORDS).
const MEMWORDS: usize = 16;
/// `sizeof(struct seccomp_data)`: nr, arch, instruction_pointer, args[6].
pub const SECCOMP_DATA_LEN: u32 = 64;
/// Instructions run over all paths of one evaluation before giving up. Jumps only go forward,
/// so every path ends; the budget bounds programs whose paths multiply (tests on many argument
/// words in a row), far above what libseccomp emits (a few hundred per syscall).
const STEP_BUDGET: u64 = 1 << 20;
/// Values a path remembers an argument word is not: beyond this the path just forgets (keeps
/// both outcomes of later tests), which is the safe direction.
const MAX_NE: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CbpfError {
    #[error("empty program")]
    Empty,
    #[error("{0} instructions, more than the kernel's limit of {MAX_INSNS}")]
    TooLong(usize),
    #[error("instruction {pc}: opcode {code:#06x} is not one a seccomp filter may use")]
    Unsupported { pc: usize, code: u16 },
    #[error("instruction {pc}: jump past the end of the program")]
    JumpOutOfRange { pc: usize },
    #[error(
        "instruction {pc}: load at offset {k} of seccomp_data (64 bytes, 4-byte aligned words)"
    )]
    BadLoad { pc: usize, k: u32 },
    #[error("instruction {pc}: scratch memory word {k} (there are 16)")]
    BadMem { pc: usize, k: u32 },
    #[error("instruction {pc}: division by the constant 0")]
    DivByZero { pc: usize },
    #[error("the last instruction is not a return")]
    NoReturn,
    #[error("more than {STEP_BUDGET} instructions over all paths: too many argument tests")]
    TooManySteps,
}

/// What the program can return for one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Return {
    /// A value known whatever the arguments.
    Value(u32),
    /// `ret A` with A computed from the arguments: any value.
    FromArguments,
}

/// Check `prog` the way the kernel does before installing it (what this interpreter relies on).
pub fn validate(prog: &[SockFilter]) -> Result<(), CbpfError> {
    if prog.is_empty() {
        return Err(CbpfError::Empty);
    }
    if prog.len() > MAX_INSNS {
        return Err(CbpfError::TooLong(prog.len()));
    }
    for (pc, ins) in prog.iter().enumerate() {
        let unsupported = || CbpfError::Unsupported { pc, code: ins.code };
        let past = |off: u64| pc as u64 + 1 + off >= prog.len() as u64;
        match ins.code & 0x07 {
            BPF_LD | BPF_LDX => match ins.code & !0x07 {
                // The kernel rewrites LD|W|ABS to LDX|W|ABS when it checks a filter; both are
                // accepted, in case a program was read back after that.
                c if c == BPF_W | BPF_ABS => {
                    if ins.k >= SECCOMP_DATA_LEN || ins.k % 4 != 0 {
                        return Err(CbpfError::BadLoad { pc, k: ins.k });
                    }
                }
                c if c == BPF_W | BPF_LEN || c == BPF_IMM => {}
                c if c == BPF_W | BPF_MEM => {
                    if ins.k as usize >= MEMWORDS {
                        return Err(CbpfError::BadMem { pc, k: ins.k });
                    }
                }
                _ => return Err(unsupported()),
            },
            BPF_ST | BPF_STX => {
                if ins.code & !0x07 != 0 {
                    return Err(unsupported());
                }
                if ins.k as usize >= MEMWORDS {
                    return Err(CbpfError::BadMem { pc, k: ins.k });
                }
            }
            BPF_ALU => {
                let op = ins.code & 0xf0;
                let src = ins.code & 0x08;
                let known = [
                    BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_XOR,
                ];
                if op == BPF_NEG {
                    if ins.code != BPF_ALU | BPF_NEG {
                        return Err(unsupported());
                    }
                } else if !known.contains(&op) || ins.code & 0x07 != BPF_ALU {
                    return Err(unsupported());
                } else if src == BPF_K && op == BPF_DIV && ins.k == 0 {
                    return Err(CbpfError::DivByZero { pc });
                } else if src == BPF_K && (op == BPF_LSH || op == BPF_RSH) && ins.k >= 32 {
                    // bpf_check_classic refuses constant shifts of 32 and more.
                    return Err(unsupported());
                }
            }
            BPF_JMP => match ins.code & 0xf0 {
                BPF_JA => {
                    if ins.code != BPF_JMP | BPF_JA {
                        return Err(unsupported());
                    }
                    if past(u64::from(ins.k)) {
                        return Err(CbpfError::JumpOutOfRange { pc });
                    }
                }
                BPF_JEQ | BPF_JGT | BPF_JGE | BPF_JSET => {
                    if past(u64::from(ins.jt)) || past(u64::from(ins.jf)) {
                        return Err(CbpfError::JumpOutOfRange { pc });
                    }
                }
                _ => return Err(unsupported()),
            },
            BPF_RET => {
                if ins.code != BPF_RET | BPF_K && ins.code != BPF_RET | BPF_A {
                    return Err(unsupported());
                }
            }
            _ => {
                // BPF_MISC
                if ins.code != BPF_MISC | BPF_TAX && ins.code != BPF_MISC | BPF_TXA {
                    return Err(unsupported());
                }
            }
        }
    }
    if prog[prog.len() - 1].code & 0x07 != BPF_RET {
        return Err(CbpfError::NoReturn);
    }
    Ok(())
}

/// A register or scratch word on one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Known(u32),
    /// Word `i` of seccomp_data (byte offset 4·i, i ≥ 2: the instruction pointer or an argument),
    /// as loaded: tests on it teach the path something.
    Word(usize),
    /// Computed from the arguments: nothing known.
    Opaque,
}

/// What one path knows about a word of seccomp_data: lo ≤ value ≤ hi, the bits in `zero` are
/// clear, and it is none of `ne`.
#[derive(Clone, Debug)]
struct Facts {
    lo: u32,
    hi: u32,
    zero: u32,
    ne: Vec<u32>,
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            lo: 0,
            hi: u32::MAX,
            zero: 0,
            ne: Vec::new(),
        }
    }
}

impl Facts {
    fn fixed(&self) -> Option<u32> {
        (self.lo == self.hi).then_some(self.lo)
    }

    /// Whether (true outcome possible, false outcome possible) for `value OP k`.
    fn outcomes(&self, op: u16, k: u32) -> (bool, bool) {
        if let Some(v) = self.fixed() {
            let t = compare(op, v, k);
            return (t, !t);
        }
        match op {
            BPF_JEQ => (
                self.lo <= k && k <= self.hi && k & self.zero == 0 && !self.ne.contains(&k),
                true,
            ),
            BPF_JGT => (self.hi > k, self.lo <= k),
            BPF_JGE => (self.hi >= k, self.lo < k),
            _ => (k & !self.zero != 0, true), // BPF_JSET
        }
    }

    /// Learn that `value OP k` is `outcome`.
    fn learn(&mut self, op: u16, k: u32, outcome: bool) {
        match (op, outcome) {
            (BPF_JEQ, true) => (self.lo, self.hi) = (k, k),
            (BPF_JEQ, false) => {
                if self.ne.len() < MAX_NE {
                    self.ne.push(k);
                }
            }
            (BPF_JGT, true) => self.lo = self.lo.max(k.saturating_add(1)),
            (BPF_JGT, false) => self.hi = self.hi.min(k),
            (BPF_JGE, true) => self.lo = self.lo.max(k),
            (BPF_JGE, false) => self.hi = self.hi.min(k.saturating_sub(1)),
            (_, false) => self.zero |= k, // BPF_JSET
            (_, true) => {}
        }
    }
}

fn compare(op: u16, a: u32, b: u32) -> bool {
    match op {
        BPF_JEQ => a == b,
        BPF_JGT => a > b,
        BPF_JGE => a >= b,
        _ => a & b != 0, // BPF_JSET
    }
}

fn alu(op: u16, a: u32, b: u32) -> u32 {
    match op {
        BPF_ADD => a.wrapping_add(b),
        BPF_SUB => a.wrapping_sub(b),
        BPF_MUL => a.wrapping_mul(b),
        BPF_DIV => a / b, // b ≠ 0: checked by the caller
        BPF_OR => a | b,
        BPF_AND => a & b,
        BPF_LSH => a.wrapping_shl(b),
        BPF_RSH => a.wrapping_shr(b),
        _ => a ^ b, // BPF_XOR
    }
}

#[derive(Clone, Debug)]
struct Path {
    pc: usize,
    a: Val,
    x: Val,
    mem: [Val; MEMWORDS],
    facts: [Facts; 16],
}

impl Path {
    /// A word whose facts pin it to one value is that value.
    fn resolve(&self, v: Val) -> Val {
        match v {
            Val::Word(i) => self.facts[i].fixed().map_or(v, Val::Known),
            v => v,
        }
    }
}

/// Every value `prog` can return for syscall `nr` on `arch`, the other fields of seccomp_data
/// open. `prog` must be valid ([`validate`]); an invalid one gives its error.
pub fn returns(prog: &[SockFilter], nr: u32, arch: u32) -> Result<BTreeSet<Return>, CbpfError> {
    validate(prog)?;
    let mut out = BTreeSet::new();
    let mut steps = 0u64;
    let mut stack = vec![Path {
        pc: 0,
        a: Val::Known(0),
        x: Val::Known(0),
        // The kernel refuses a program that reads a scratch word before storing it.
        mem: [Val::Known(0); MEMWORDS],
        facts: Default::default(),
    }];
    while let Some(mut p) = stack.pop() {
        loop {
            steps += 1;
            if steps > STEP_BUDGET {
                return Err(CbpfError::TooManySteps);
            }
            let ins = prog[p.pc];
            let k = ins.k;
            match ins.code & 0x07 {
                class @ (BPF_LD | BPF_LDX) => {
                    let v = match ins.code & !0x07 {
                        c if c == BPF_W | BPF_ABS => match k {
                            0 => Val::Known(nr),
                            4 => Val::Known(arch),
                            _ => Val::Word(k as usize / 4),
                        },
                        c if c == BPF_W | BPF_LEN => Val::Known(SECCOMP_DATA_LEN),
                        c if c == BPF_W | BPF_MEM => p.mem[k as usize],
                        _ => Val::Known(k), // BPF_IMM
                    };
                    if class == BPF_LD {
                        p.a = v;
                    } else {
                        p.x = v;
                    }
                    p.pc += 1;
                }
                BPF_ST => {
                    p.mem[k as usize] = p.a;
                    p.pc += 1;
                }
                BPF_STX => {
                    p.mem[k as usize] = p.x;
                    p.pc += 1;
                }
                BPF_ALU => {
                    let op = ins.code & 0xf0;
                    let a = p.resolve(p.a);
                    if op == BPF_NEG {
                        p.a = match a {
                            Val::Known(v) => Val::Known(v.wrapping_neg()),
                            _ => Val::Opaque,
                        };
                        p.pc += 1;
                        continue;
                    }
                    let b = if ins.code & 0x08 == BPF_X {
                        p.resolve(p.x)
                    } else {
                        Val::Known(k)
                    };
                    if op == BPF_DIV && !matches!(b, Val::Known(_)) {
                        // Dividing by X computed from the arguments: a zero divisor makes
                        // classic BPF return 0 from the program, any other goes on.
                        out.insert(Return::Value(0));
                    }
                    p.a = match (a, b) {
                        (_, Val::Known(0)) if op == BPF_DIV => {
                            out.insert(Return::Value(0));
                            break;
                        }
                        (Val::Known(a), Val::Known(b)) => Val::Known(alu(op, a, b)),
                        // x & 0 and x * 0 are 0 whatever x is.
                        (_, Val::Known(0)) if op == BPF_AND || op == BPF_MUL => Val::Known(0),
                        _ => Val::Opaque,
                    };
                    p.pc += 1;
                }
                BPF_JMP => {
                    let op = ins.code & 0xf0;
                    if op == BPF_JA {
                        p.pc += 1 + k as usize;
                        continue;
                    }
                    let (t, f) = (p.pc + 1 + ins.jt as usize, p.pc + 1 + ins.jf as usize);
                    let a = p.resolve(p.a);
                    let b = if ins.code & 0x08 == BPF_X {
                        p.resolve(p.x)
                    } else {
                        Val::Known(k)
                    };
                    match (a, b) {
                        (Val::Known(a), Val::Known(b)) => {
                            p.pc = if compare(op, a, b) { t } else { f };
                        }
                        (Val::Word(i), Val::Known(b)) => {
                            let (can_t, can_f) = p.facts[i].outcomes(op, b);
                            if can_t && can_f {
                                let mut other = p.clone();
                                other.facts[i].learn(op, b, false);
                                other.pc = f;
                                stack.push(other);
                                p.facts[i].learn(op, b, true);
                                p.pc = t;
                            } else if can_t {
                                p.facts[i].learn(op, b, true);
                                p.pc = t;
                            } else {
                                // A consistent path always has at least one outcome.
                                p.facts[i].learn(op, b, false);
                                p.pc = f;
                            }
                        }
                        _ => {
                            let mut other = p.clone();
                            other.pc = f;
                            stack.push(other);
                            p.pc = t;
                        }
                    }
                }
                BPF_RET => {
                    let v = if ins.code & 0x18 == BPF_A {
                        p.resolve(p.a)
                    } else {
                        Val::Known(k)
                    };
                    out.insert(match v {
                        Val::Known(v) => Return::Value(v),
                        _ => Return::FromArguments,
                    });
                    break;
                }
                _ => {
                    // BPF_MISC
                    if ins.code == BPF_MISC | BPF_TAX {
                        p.x = p.a;
                    } else {
                        p.a = p.x;
                    }
                    p.pc += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The three instructions test filters are written with (here and in `enforced`'s tests).
#[cfg(test)]
pub(crate) mod asm {
    use super::*;

    pub fn ld(off: u32) -> SockFilter {
        SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, off)
    }
    pub fn jeq(k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf)
    }
    pub fn ret(k: u32) -> SockFilter {
        SockFilter::stmt(BPF_RET | BPF_K, k)
    }
}

#[cfg(test)]
mod tests {
    use super::asm::*;
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;
    const X86_64: u32 = 0xc000_003e;

    fn vals(v: &[u32]) -> BTreeSet<Return> {
        v.iter().map(|v| Return::Value(*v)).collect()
    }

    #[test]
    fn known_fields_take_one_path() {
        let prog = [
            ld(4),
            jeq(X86_64, 1, 0),
            ret(0),
            ld(0),
            jeq(39, 0, 1),
            ret(EPERM),
            ret(ALLOW),
        ];
        assert_eq!(returns(&prog, 39, X86_64), Ok(vals(&[EPERM])));
        assert_eq!(returns(&prog, 40, X86_64), Ok(vals(&[ALLOW])));
        assert_eq!(returns(&prog, 39, 0x4000_0003), Ok(vals(&[0])));
    }

    #[test]
    fn argument_tests_explore_both_outcomes() {
        // arg0 (low word) == 0 → allow, else EPERM.
        let prog = [ld(16), jeq(0, 0, 1), ret(ALLOW), ret(EPERM)];
        assert_eq!(returns(&prog, 135, X86_64), Ok(vals(&[ALLOW, EPERM])));
        // The instruction pointer counts as unknown too.
        let prog = [ld(8), jeq(0, 0, 1), ret(ALLOW), ret(EPERM)];
        assert_eq!(returns(&prog, 1, X86_64), Ok(vals(&[ALLOW, EPERM])));
    }

    #[test]
    fn facts_prune_paths_no_call_takes() {
        // arg0 == 5 → (arg0 == 5 ? allow : kill), else EPERM: the kill is unreachable.
        let prog = [
            ld(16),
            jeq(5, 0, 3),
            ld(16),
            jeq(5, 0, 2),
            ret(ALLOW),
            ret(EPERM),
            ret(0),
        ];
        assert_eq!(returns(&prog, 1, X86_64), Ok(vals(&[ALLOW, EPERM])));
        // arg0 > 10 then arg0 >= 5 is always true; arg0 <= 10 then arg0 > 20 never.
        let prog = [
            ld(16),
            SockFilter::jump(BPF_JMP | BPF_JGT | BPF_K, 10, 0, 3),
            SockFilter::jump(BPF_JMP | BPF_JGE | BPF_K, 5, 0, 1),
            ret(ALLOW),
            ret(0),
            SockFilter::jump(BPF_JMP | BPF_JGT | BPF_K, 20, 0, 1),
            ret(0),
            ret(EPERM),
        ];
        assert_eq!(returns(&prog, 1, X86_64), Ok(vals(&[ALLOW, EPERM])));
        // Bits known clear: !(arg0 & 0xf0) then (arg0 & 0x10) never.
        let prog = [
            ld(16),
            SockFilter::jump(BPF_JMP | BPF_JSET | BPF_K, 0xf0, 2, 0),
            SockFilter::jump(BPF_JMP | BPF_JSET | BPF_K, 0x10, 0, 1),
            ret(0),
            ret(ALLOW),
        ];
        assert_eq!(returns(&prog, 1, X86_64), Ok(vals(&[ALLOW])));
    }

    #[test]
    fn same_return_on_every_path_is_one_value() {
        let prog = [ld(24), jeq(7, 0, 1), ret(ALLOW), ret(ALLOW)];
        assert_eq!(returns(&prog, 0, X86_64), Ok(vals(&[ALLOW])));
    }

    #[test]
    fn alu_scratch_and_misc() {
        // A = nr; A &= 0xff; M[3] = A; X = 0; A = M[3]; TAX; TXA; A == 0x27 → EPERM.
        let prog = [
            ld(0),
            SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, 0xff),
            SockFilter::stmt(BPF_ST, 3),
            SockFilter::stmt(BPF_LDX | BPF_IMM, 0),
            SockFilter::stmt(BPF_LD | BPF_MEM, 3),
            SockFilter::stmt(BPF_MISC | BPF_TAX, 0),
            SockFilter::stmt(BPF_LD | BPF_IMM, 1),
            SockFilter::stmt(BPF_MISC | BPF_TXA, 0),
            jeq(0x27, 0, 1),
            ret(EPERM),
            ret(ALLOW),
        ];
        assert_eq!(returns(&prog, 0x127, X86_64), Ok(vals(&[EPERM])));
        assert_eq!(returns(&prog, 0x128, X86_64), Ok(vals(&[ALLOW])));
        // Masked argument (libseccomp's SCMP_CMP_MASKED_EQ): unknown after the AND.
        let prog = [
            ld(16),
            SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, 0x7e02_0000),
            jeq(0, 0, 1),
            ret(ALLOW),
            ret(EPERM),
        ];
        assert_eq!(returns(&prog, 56, X86_64), Ok(vals(&[ALLOW, EPERM])));
        // ...unless the mask is 0.
        let prog = [
            ld(16),
            SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, 0),
            jeq(0, 0, 1),
            ret(ALLOW),
            ret(EPERM),
        ];
        assert_eq!(returns(&prog, 56, X86_64), Ok(vals(&[ALLOW])));
        // Every ALU op on known values, then RET A.
        for (op, k, want) in [
            (BPF_ADD, 5, 15),
            (BPF_SUB, 3, 7),
            (BPF_MUL, 3, 30),
            (BPF_DIV, 3, 3),
            (BPF_OR, 5, 15),
            (BPF_XOR, 3, 9),
            (BPF_LSH, 2, 40),
            (BPF_RSH, 1, 5),
        ] {
            let prog = [
                SockFilter::stmt(BPF_LD | BPF_IMM, 10),
                SockFilter::stmt(BPF_ALU | op | BPF_K, k),
                SockFilter::stmt(BPF_RET | BPF_A, 0),
            ];
            assert_eq!(returns(&prog, 0, X86_64), Ok(vals(&[want])), "op {op:#x}");
        }
        let neg = [
            SockFilter::stmt(BPF_LD | BPF_IMM, 1),
            SockFilter::stmt(BPF_ALU | BPF_NEG, 0),
            SockFilter::stmt(BPF_RET | BPF_A, 0),
        ];
        assert_eq!(returns(&neg, 0, X86_64), Ok(vals(&[u32::MAX])));
        // RET A of an argument: any value.
        let prog = [ld(16), SockFilter::stmt(BPF_RET | BPF_A, 0)];
        assert_eq!(
            returns(&prog, 0, X86_64),
            Ok([Return::FromArguments].into())
        );
        // LEN and JA.
        let prog = [
            SockFilter::stmt(BPF_LD | BPF_W | BPF_LEN, 0),
            SockFilter::stmt(BPF_JMP | BPF_JA, 1),
            ret(0),
            SockFilter::stmt(BPF_RET | BPF_A, 0),
        ];
        assert_eq!(returns(&prog, 0, X86_64), Ok(vals(&[64])));
    }

    #[test]
    fn division_by_an_argument_may_end_the_program() {
        let prog = [
            ld(16),
            SockFilter::stmt(BPF_MISC | BPF_TAX, 0),
            SockFilter::stmt(BPF_LD | BPF_IMM, 8),
            SockFilter::stmt(BPF_ALU | BPF_DIV | BPF_X, 0),
            ret(ALLOW),
        ];
        assert_eq!(returns(&prog, 0, X86_64), Ok(vals(&[0, ALLOW])));
    }

    #[test]
    fn invalid_programs_are_refused() {
        assert_eq!(returns(&[], 0, X86_64), Err(CbpfError::Empty));
        assert_eq!(
            returns(&[ld(2), ret(0)], 0, X86_64),
            Err(CbpfError::BadLoad { pc: 0, k: 2 })
        );
        assert_eq!(
            returns(&[ld(64), ret(0)], 0, X86_64),
            Err(CbpfError::BadLoad { pc: 0, k: 64 })
        );
        assert_eq!(
            returns(&[jeq(0, 1, 0), ret(0)], 0, X86_64),
            Err(CbpfError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            returns(&[ld(0)], 0, X86_64),
            Err(CbpfError::NoReturn),
            "falls off the end"
        );
        // BPF_LD|BPF_B|BPF_ABS (a byte load) is packet filtering, not seccomp.
        assert_eq!(
            returns(&[SockFilter::stmt(0x30, 0), ret(0)], 0, X86_64),
            Err(CbpfError::Unsupported { pc: 0, code: 0x30 })
        );
        assert_eq!(
            returns(&[SockFilter::stmt(BPF_ST, 16), ret(0)], 0, X86_64),
            Err(CbpfError::BadMem { pc: 0, k: 16 })
        );
        assert_eq!(
            returns(
                &[SockFilter::stmt(BPF_ALU | BPF_DIV | BPF_K, 0), ret(0)],
                0,
                X86_64
            ),
            Err(CbpfError::DivByZero { pc: 0 })
        );
        let long = vec![ret(0); MAX_INSNS + 1];
        assert_eq!(
            returns(&long, 0, X86_64),
            Err(CbpfError::TooLong(MAX_INSNS + 1))
        );
    }

    #[test]
    fn path_explosion_is_bounded() {
        // 40 independent tests on argument words in a row, each with both outcomes joining
        // again: 2^40 paths. The budget stops it with an error rather than hanging.
        let mut prog = Vec::new();
        for i in 0..40u32 {
            prog.push(ld(16 + 4 * (i % 12)));
            prog.push(SockFilter::jump(
                BPF_JMP | BPF_JSET | BPF_K,
                1 << (i % 32),
                0,
                0,
            ));
        }
        prog.push(ret(ALLOW));
        assert_eq!(returns(&prog, 0, X86_64), Err(CbpfError::TooManySteps));
    }
}
