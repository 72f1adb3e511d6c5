//! Classic BPF encoding of a seccomp allowlist for x86_64, compact enough to install quickly.
//!
//! A [`Filter`] (numbers only: which syscalls are allowed, which only after an argument check,
//! which answer a fixed errno) becomes a program of this shape:
//!
//! 1. load the architecture; anything but x86_64 (i386 `int 0x80`) kills the process;
//! 2. load the number; x32 numbers (bit 30) get the deny action;
//! 3. syscalls with a fixed errno, then argument-checked syscalls, one comparison each;
//! 4. a binary search over sorted blocks of allowed numbers: one comparison per node, one per
//!    leaf, so about two instructions per block and ⌈log₂ blocks⌉ + 1 executed. A block is a
//!    range, with single denied numbers inside it as holes (one comparison each, cheaper than
//!    splitting the range); numbers answered in step 3 never get here, so blocks extend over
//!    them;
//! 5. everything else gets the deny action.
//!
//! Both the length and the path length matter. At install the kernel checks and translates every
//! instruction, then runs the program for every syscall number to cache which ones are allowed
//! whatever their arguments (those then skip the filter at run time): the install cost grows
//! with the length plus the number of syscalls times the path length. The instructions used are
//! the ones that cache understands (loads of `nr` and `arch`, `ja`, `jeq`/`jgt`/`jge`/`jset` with
//! constants, `ret`), and argument loads only on the paths of argument-checked syscalls.
//!
//! The program is assembled backwards (last instruction first), so every jump target is already
//! placed when the jump is emitted: returns are shared while they are within a conditional
//! jump's 255-instruction reach and duplicated when not, and a target out of reach gets a `ja`
//! (32-bit offset) trampoline. Any [`Filter`] thus encodes.
//!
//! Arguments are compared on their low 32 bits (`seccomp_data.args[i]` is 64 bits, little-endian,
//! so the low word is at the argument's offset): every argument checked here is an `int` or
//! `unsigned int` to the kernel, which ignores the high word, so comparing 64 bits would let a
//! caller slip past a check by setting high bits.

use std::collections::{BTreeSet, HashMap};
use std::mem::offset_of;

use seccompiler::sock_filter;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` with the 64-bit and little-endian flags.
pub const AUDIT_ARCH_X86_64: u32 = libc::EM_X86_64 as u32 | 0x8000_0000 | 0x4000_0000;
/// Set in the number of every x32 ABI syscall.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Return value: run the syscall.
pub const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// Return value: kill the whole process with SIGSYS.
pub const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// Return value: fail the syscall with `errno`.
pub const fn errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// What a filter decides, as numbers: built by `seccomp.rs` from a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Syscall numbers allowed whatever their arguments.
    pub allow: BTreeSet<u32>,
    /// Syscalls answered with a fixed return value (such as an errno) before anything else.
    pub fixed: Vec<(u32, u32)>,
    /// Syscalls allowed only when one argument passes a check.
    pub checked: Vec<(u32, ArgCheck)>,
    /// Return value for everything not allowed (x32 numbers included).
    pub deny: u32,
}

/// A test on the low 32 bits of one argument that decides a syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgCheck {
    /// Which argument, 0 to 5.
    pub arg: u8,
    /// The test.
    pub test: Test,
}

/// The tests [`ArgCheck`] can make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Test {
    /// Allowed unless the value is one of these.
    DenyEqual(Vec<u32>),
    /// Allowed unless any of these bits is set.
    DenyAnyBit(u32),
    /// Allowed only if the value is one of these.
    AllowEqual(Vec<u32>),
}

/// Encodes `filter` as a seccomp program (see the module documentation for its shape).
pub fn encode(filter: &Filter) -> Vec<sock_filter> {
    let mut asm = Assembler::default();
    let deny = Target::Ret(filter.deny);
    let allow = Target::Ret(ALLOW);
    // Emitted last to first. The argument checks go at the end, out of the search's way.
    let checks: Vec<(u32, Label)> = filter
        .checked
        .iter()
        .rev()
        .map(|(nr, check)| (*nr, asm.arg_check(check, allow, deny)))
        .collect();
    let intercepted = filter.fixed.iter().map(|(nr, _)| *nr);
    let intercepted = intercepted.chain(filter.checked.iter().map(|(nr, _)| *nr));
    let blocks = blocks(&filter.allow, &intercepted.collect());
    let search = if blocks.is_empty() {
        asm.ret(filter.deny)
    } else {
        asm.search(&blocks, false, allow, deny)
    };
    let mut next = Target::At(search);
    for &(nr, check) in &checks {
        next = Target::At(asm.jump(JEQ, nr, Target::At(check), next));
    }
    for &(nr, value) in filter.fixed.iter().rev() {
        next = Target::At(asm.jump(JEQ, nr, Target::Ret(value), next));
    }
    asm.jump(JGE, X32_SYSCALL_BIT, deny, next);
    let native = asm.load(offset_of!(libc::seccomp_data, nr));
    asm.jump(
        JEQ,
        AUDIT_ARCH_X86_64,
        Target::At(native),
        Target::Ret(KILL_PROCESS),
    );
    asm.load(offset_of!(libc::seccomp_data, arch));
    asm.finish()
}

/// The most holes a block may have.
const MAX_HOLES: usize = 4;

/// Allowed numbers: `lo` to `hi` except the `holes`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    lo: u32,
    hi: u32,
    holes: Vec<u32>,
}

/// Sorted, disjoint blocks covering exactly `numbers` among the numbers not `intercepted`
/// (answered before the search, so never searched for: blocks extend over them freely).
///
/// A single denied number between two blocks becomes a hole: one comparison inside a block,
/// where a separate block would cost two (its leaf and a search node). Holes are checked one
/// after the other, so a block has at most [`MAX_HOLES`], to keep the path short.
fn blocks(numbers: &BTreeSet<u32>, intercepted: &BTreeSet<u32>) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for &nr in numbers {
        if let Some(block) = out.last_mut() {
            let mut gap = (block.hi + 1..nr).filter(|n| !intercepted.contains(n));
            match (gap.next(), gap.next()) {
                (None, _) => {
                    block.hi = nr;
                    continue;
                }
                (Some(hole), None) if block.holes.len() < MAX_HOLES => {
                    block.holes.push(hole);
                    block.hi = nr;
                    continue;
                }
                _ => {}
            }
        }
        out.push(Block {
            lo: nr,
            hi: nr,
            holes: Vec::new(),
        });
    }
    out
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Byte offset of the low 32 bits of argument `arg` (x86_64 is little-endian).
fn arg_low_word(arg: u8) -> usize {
    offset_of!(libc::seccomp_data, args) + 8 * usize::from(arg)
}

/// An instruction's place, counted from the end of the program (0 is the last instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

/// Where a jump goes.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// An instruction already emitted.
    At(Label),
    /// The nearest `ret` of this value, emitted if none is in reach.
    Ret(u32),
}

/// Emits a program backwards: each new instruction runs before those emitted so far.
#[derive(Default)]
struct Assembler {
    reversed: Vec<sock_filter>,
    /// The most recently emitted (so nearest) `ret` of each value.
    rets: HashMap<u32, Label>,
}

impl Assembler {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> Label {
        self.reversed.push(sock_filter { code, jt, jf, k });
        Label(self.reversed.len() - 1)
    }

    fn ret(&mut self, value: u32) -> Label {
        let label = self.push(RET_K, 0, 0, value);
        self.rets.insert(value, label);
        label
    }

    fn load(&mut self, offset: usize) -> Label {
        self.push(LD_W_ABS, 0, 0, offset as u32)
    }

    /// A label for `target` that a jump emitted after `slack` more instructions can reach.
    fn reach(&mut self, target: Target, slack: usize) -> Label {
        let from = self.reversed.len() + slack;
        let in_reach = |Label(to): Label| from - to - 1 <= usize::from(u8::MAX);
        match target {
            Target::At(label) if in_reach(label) => label,
            Target::At(Label(to)) => {
                let offset = self.reversed.len() - to - 1;
                self.push(JA, 0, 0, offset as u32)
            }
            Target::Ret(value) => match self.rets.get(&value) {
                Some(&label) if in_reach(label) => label,
                _ => self.ret(value),
            },
        }
    }

    /// A conditional jump: to `jt` if the accumulator compares true with `k`, else to `jf`.
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) -> Label {
        // Resolving `jf` may emit one more instruction between this jump and `jt`'s label.
        let Label(jt) = self.reach(jt, 1);
        let Label(jf) = self.reach(jf, 0);
        let here = self.reversed.len();
        self.push(code, (here - jt - 1) as u8, (here - jf - 1) as u8, k)
    }

    /// One argument check: loads the argument and returns to `allow` or `deny`.
    fn arg_check(&mut self, check: &ArgCheck, allow: Target, deny: Target) -> Label {
        match &check.test {
            Test::DenyEqual(values) => {
                let mut next = allow;
                for &value in values.iter().rev() {
                    next = Target::At(self.jump(JEQ, value, deny, next));
                }
            }
            Test::DenyAnyBit(mask) => {
                self.jump(JSET, *mask, deny, allow);
            }
            Test::AllowEqual(values) => {
                let mut next = deny;
                for &value in values.iter().rev() {
                    next = Target::At(self.jump(JEQ, value, allow, next));
                }
            }
        }
        self.load(arg_low_word(check.arg))
    }

    /// The search over `blocks` (non-empty). Above, the number was found to be below the block
    /// that follows these; `at_least_first` says whether it is also known to be at least the
    /// first block's start.
    fn search(
        &mut self,
        blocks: &[Block],
        at_least_first: bool,
        allow: Target,
        deny: Target,
    ) -> Label {
        if let [block] = blocks {
            let mut leaf = self.jump(JGT, block.hi, deny, allow);
            for &hole in block.holes.iter().rev() {
                leaf = self.jump(JEQ, hole, deny, Target::At(leaf));
            }
            return if at_least_first || block.lo == 0 {
                leaf
            } else {
                self.jump(JGE, block.lo, Target::At(leaf), deny)
            };
        }
        let mid = blocks.len() / 2;
        let upper = self.search(&blocks[mid..], true, allow, deny);
        let lower = self.search(&blocks[..mid], at_least_first, allow, deny);
        self.jump(JGE, blocks[mid].lo, Target::At(upper), Target::At(lower))
    }

    fn finish(mut self) -> Vec<sock_filter> {
        // The kernel requires the last instruction to be a return; every jump's targets are
        // emitted before it, so the first instruction emitted always is one.
        debug_assert_eq!(self.reversed.first().map(|insn| insn.code), Some(RET_K));
        self.reversed.reverse();
        self.reversed
    }
}

/// Runs `program` on one syscall the way the kernel does, for tests: returns the return value.
#[cfg(test)]
pub fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::with_capacity(64);
    data.extend(nr.to_le_bytes());
    data.extend(arch.to_le_bytes());
    data.extend(0u64.to_le_bytes());
    for arg in args {
        data.extend(arg.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let insn = &program[pc];
        pc += 1;
        let k = insn.k;
        let taken = match insn.code {
            LD_W_ABS => {
                let at = k as usize;
                acc = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                continue;
            }
            RET_K => return k,
            JA => {
                pc += k as usize;
                continue;
            }
            JEQ => acc == k,
            JGT => acc > k,
            JGE => acc >= k,
            JSET => acc & k != 0,
            code => panic!("unexpected instruction {code:#x} at {}", pc - 1),
        };
        pc += usize::from(if taken { insn.jt } else { insn.jf });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: u32 = errno(libc::EPERM);

    fn filter(allow: impl IntoIterator<Item = u32>) -> Filter {
        Filter {
            allow: allow.into_iter().collect(),
            fixed: vec![(435, errno(libc::ENOSYS))],
            checked: vec![
                (
                    16,
                    ArgCheck {
                        arg: 1,
                        test: Test::DenyEqual(vec![0x5412, 0x541c]),
                    },
                ),
                (
                    56,
                    ArgCheck {
                        arg: 0,
                        test: Test::DenyAnyBit(0x1000_0000),
                    },
                ),
                (
                    41,
                    ArgCheck {
                        arg: 0,
                        test: Test::AllowEqual(vec![1, 2]),
                    },
                ),
            ],
            deny: DENY,
        }
    }

    /// Every number, x32 numbers and a foreign architecture get what the filter says.
    fn assert_decides(filter: &Filter) {
        let program = encode(filter);
        assert!(program.len() <= usize::from(u16::MAX));
        let checked: Vec<u32> = filter.checked.iter().map(|(nr, _)| *nr).collect();
        for nr in 0..1000 {
            let got = run(&program, AUDIT_ARCH_X86_64, nr, [0; 6]);
            let want = if let Some(&(_, value)) = filter.fixed.iter().find(|(n, _)| *n == nr) {
                value
            } else if checked.contains(&nr) {
                got // decided by its argument, checked below
            } else if filter.allow.contains(&nr) {
                ALLOW
            } else {
                filter.deny
            };
            assert_eq!(got, want, "syscall {nr}");
            let x32 = run(&program, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, [0; 6]);
            assert_eq!(x32, filter.deny, "x32 syscall {nr}");
            let i386 = run(&program, 0x4000_0003, nr, [0; 6]);
            assert_eq!(i386, KILL_PROCESS, "i386 syscall {nr}");
        }
        assert_eq!(
            run(&program, AUDIT_ARCH_X86_64, u32::MAX, [0; 6]),
            filter.deny
        );
    }

    #[test]
    fn searches_sorted_ranges_exactly() {
        assert_decides(&filter([0, 1, 2, 5, 9, 10, 11, 200, 300, 301, 460]));
        assert_decides(&filter([7]));
        assert_decides(&filter([]));
        assert_decides(&filter(3..400));
        // Single holes, more than a block takes.
        assert_decides(&filter(
            (0..60).step_by(2).chain(100..110).chain([112, 114]),
        ));
    }

    #[test]
    fn reaches_far_targets_in_long_programs() {
        // Every third number: the most blocks a filter can have, far past a jump's reach.
        let sparse = filter((0..900).step_by(3));
        let program = encode(&sparse);
        assert!(program.len() > 500, "{} instructions", program.len());
        assert!(program.iter().any(|insn| insn.code == JA), "no trampoline");
        assert_decides(&sparse);
    }

    #[test]
    fn checks_arguments_on_their_low_word() {
        let program = encode(&filter([0, 1]));
        let ioctl = |cmd: u64| run(&program, AUDIT_ARCH_X86_64, 16, [0, cmd, 0, 0, 0, 0]);
        assert_eq!(ioctl(0x5412), DENY);
        assert_eq!(
            ioctl(0x5412 | 1 << 32),
            DENY,
            "the kernel ignores the high word"
        );
        assert_eq!(ioctl(0x541c), DENY);
        assert_eq!(ioctl(0x541b), ALLOW);
        let clone = |flags: u64| run(&program, AUDIT_ARCH_X86_64, 56, [flags, 0, 0, 0, 0, 0]);
        assert_eq!(clone(0x1000_0000 | 0x11), DENY);
        assert_eq!(clone(0x11), ALLOW);
        let socket = |domain: u64| run(&program, AUDIT_ARCH_X86_64, 41, [domain, 0, 0, 0, 0, 0]);
        assert_eq!(socket(1), ALLOW);
        assert_eq!(socket(2), ALLOW);
        assert_eq!(socket(10), DENY);
    }
}
