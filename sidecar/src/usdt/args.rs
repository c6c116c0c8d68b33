//! x86_64 USDT argument specs, as written by `<sys/sdt.h>` into each note: `SIZE@LOCATION`,
//! space separated. SIZE is the byte width, negative when signed. LOCATION is a register
//! (`%rax`, `%edi`, `%dil`), a memory operand (`-20(%rbp)`, `16(%rdi,%rcx,8)`) or a constant
//! (`$5`).

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("argument {spec:?}: {reason}")]
    Bad { spec: String, reason: &'static str },
    #[error("argument {spec:?}: unknown register %{reg}")]
    Register { spec: String, reg: String },
    #[error("{count} arguments, at most {max} are supported")]
    TooMany { count: usize, max: usize },
}

/// Where the value of an argument lives when the probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Const(i64),
    /// In a register: byte offset of the register in `struct pt_regs`.
    Reg(u16),
    /// In memory at register + displacement.
    Deref {
        reg: u16,
        off: i64,
    },
    /// In memory at base + index * scale + displacement.
    Sib {
        base: u16,
        index: u16,
        scale: u8,
        off: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub signed: bool,
    pub loc: Location,
}

/// Byte offset of a register in x86_64 `struct pt_regs`, for every width of its name.
pub fn pt_regs_offset(name: &str) -> Option<u16> {
    const REGS: &[(&[&str], u16)] = &[
        (&["r15", "r15d", "r15w", "r15b"], 0),
        (&["r14", "r14d", "r14w", "r14b"], 8),
        (&["r13", "r13d", "r13w", "r13b"], 16),
        (&["r12", "r12d", "r12w", "r12b"], 24),
        (&["rbp", "ebp", "bp", "bpl"], 32),
        (&["rbx", "ebx", "bx", "bl", "bh"], 40),
        (&["r11", "r11d", "r11w", "r11b"], 48),
        (&["r10", "r10d", "r10w", "r10b"], 56),
        (&["r9", "r9d", "r9w", "r9b"], 64),
        (&["r8", "r8d", "r8w", "r8b"], 72),
        (&["rax", "eax", "ax", "al", "ah"], 80),
        (&["rcx", "ecx", "cx", "cl", "ch"], 88),
        (&["rdx", "edx", "dx", "dl", "dh"], 96),
        (&["rsi", "esi", "si", "sil"], 104),
        (&["rdi", "edi", "di", "dil"], 112),
        (&["rip", "eip", "ip"], 128),
        (&["rsp", "esp", "sp", "spl"], 152),
    ];
    REGS.iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, off)| *off)
}

pub const MAX_ARGS: usize = sidecar_ebpf::USDT_MAX_ARGS;

/// Parse the whole argument string of a note.
pub fn parse_args(s: &str) -> Result<Vec<Arg>, ArgError> {
    let args: Vec<Arg> = s
        .split_ascii_whitespace()
        .map(parse_arg)
        .collect::<Result<_, _>>()?;
    if args.len() > MAX_ARGS {
        return Err(ArgError::TooMany {
            count: args.len(),
            max: MAX_ARGS,
        });
    }
    Ok(args)
}

pub fn parse_arg(spec: &str) -> Result<Arg, ArgError> {
    let bad = |reason| ArgError::Bad {
        spec: spec.to_string(),
        reason,
    };
    let (size, loc) = spec.split_once('@').ok_or_else(|| bad("no SIZE@"))?;
    let size: i8 = size.parse().map_err(|_| bad("size is not a number"))?;
    let signed = size < 0;
    let width = size.unsigned_abs();
    if ![1, 2, 4, 8].contains(&width) {
        return Err(bad("size must be 1, 2, 4 or 8"));
    }
    let reg = |name: &str| {
        let name = name
            .strip_prefix('%')
            .ok_or_else(|| bad("register without %"))?;
        pt_regs_offset(name).ok_or_else(|| ArgError::Register {
            spec: spec.to_string(),
            reg: name.to_string(),
        })
    };
    let loc = if let Some(c) = loc.strip_prefix('$') {
        Location::Const(parse_int(c).ok_or_else(|| bad("constant is not a number"))?)
    } else if loc.starts_with('%') {
        Location::Reg(reg(loc)?)
    } else {
        let open = loc
            .find('(')
            .ok_or_else(|| bad("expected %reg, $const or off(%reg)"))?;
        let inner = loc[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| bad("unclosed parenthesis"))?;
        let off = if open == 0 {
            0
        } else {
            parse_int(&loc[..open]).ok_or_else(|| bad("displacement is not a number"))?
        };
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        match parts.as_slice() {
            [base] => Location::Deref {
                reg: reg(base)?,
                off,
            },
            [base, index] | [base, index, ""] => Location::Sib {
                base: reg(base)?,
                index: reg(index)?,
                scale: 1,
                off,
            },
            [base, index, scale] => {
                let scale: u8 = scale.parse().map_err(|_| bad("scale is not a number"))?;
                if ![1, 2, 4, 8].contains(&scale) {
                    return Err(bad("scale must be 1, 2, 4 or 8"));
                }
                Location::Sib {
                    base: reg(base)?,
                    index: reg(index)?,
                    scale,
                    off,
                }
            }
            _ => return Err(bad("too many operands in memory reference")),
        }
    };
    Ok(Arg {
        size: width,
        signed,
        loc,
    })
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok()? as i64,
        None => s.parse::<u64>().ok()? as i64,
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

impl Arg {
    /// The kernel's view of this argument (`struct usdt_arg`).
    pub fn to_kernel(&self) -> sidecar_ebpf::UsdtArg {
        use sidecar_ebpf::usdt_arg_kind as k;
        let mut a = sidecar_ebpf::UsdtArg {
            bitshift: 64 - 8 * self.size,
            is_signed: u8::from(self.signed),
            ..Default::default()
        };
        match self.loc {
            Location::Const(v) => {
                a.kind = k::CONST;
                a.val_off = v as u64;
            }
            Location::Reg(r) => {
                a.kind = k::REG;
                a.reg_off = r;
            }
            Location::Deref { reg, off } => {
                a.kind = k::REG_DEREF;
                a.reg_off = reg;
                a.val_off = off as u64;
            }
            Location::Sib {
                base,
                index,
                scale,
                off,
            } => {
                a.kind = k::SIB;
                a.reg_off = base;
                a.idx_reg_off = index;
                a.scale_shift = scale.trailing_zeros() as u8;
                a.val_off = off as u64;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_memory() {
        assert_eq!(
            parse_arg("8@%rax").unwrap(),
            Arg {
                size: 8,
                signed: false,
                loc: Location::Reg(80)
            }
        );
        assert_eq!(
            parse_arg("-4@-20(%rbp)").unwrap(),
            Arg {
                size: 4,
                signed: true,
                loc: Location::Deref { reg: 32, off: -20 }
            }
        );
        assert_eq!(
            parse_arg("8@16(%rdi,%rcx,8)").unwrap().loc,
            Location::Sib {
                base: 112,
                index: 88,
                scale: 8,
                off: 16
            }
        );
        assert_eq!(parse_arg("4@$5").unwrap().loc, Location::Const(5));
        assert_eq!(parse_arg("-4@$-3").unwrap().loc, Location::Const(-3));
        assert_eq!(parse_arg("1@%dil").unwrap().loc, Location::Reg(112));
        assert_eq!(
            parse_arg("-4@112(%rsp)").unwrap().loc,
            Location::Deref { reg: 152, off: 112 }
        );
        assert_eq!(
            parse_arg("8@(%rax)").unwrap().loc,
            Location::Deref { reg: 80, off: 0 }
        );
        assert_eq!(parse_args("8@%r14 8@%rax -4@%ebp").unwrap().len(), 3);
        assert_eq!(parse_args("").unwrap().len(), 0);
    }

    #[test]
    fn kernel_form() {
        let k = parse_arg("-4@-20(%rbp)").unwrap().to_kernel();
        assert_eq!(k.kind, sidecar_ebpf::usdt_arg_kind::REG_DEREF);
        assert_eq!(k.reg_off, 32);
        assert_eq!(k.val_off as i64, -20);
        assert_eq!(k.bitshift, 32);
        assert_eq!(k.is_signed, 1);
        let s = parse_arg("8@16(%rdi,%rcx,8)").unwrap().to_kernel();
        assert_eq!((s.idx_reg_off, s.scale_shift), (88, 3));
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "",
            "8",
            "@%rax",
            "3@%rax",
            "8@%zz",
            "8@rax",
            "8@-20(%rbp",
            "8@x(%rbp)",
            "8@(%rax,%rbx,3)",
            "8@$",
            "8@$abc",
            "99999@%rax",
            "8@(%a,%b,%c,%d)",
            "-@%rax",
            "8@()",
            "8@%",
            "８@%rax",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad:?} should not parse");
        }
        let many = vec!["8@%rax"; MAX_ARGS + 1].join(" ");
        assert!(matches!(parse_args(&many), Err(ArgError::TooMany { .. })));
    }
}
