//! Docker's default seccomp profile for a step, made into a BPF program from data: the
//! profile itself (`seccomp/docker-default.json`, moby/profiles' `seccomp/default.json` as
//! the file says) and the system call numbers of each ABI (`seccomp/syscalls.tsv`, generated
//! from the kernel headers by `scripts/seccomp-tables.py`). Nothing here names a system call.
//!
//! The profile is evaluated as moby's `setupSeccomp` does for a container with Docker's
//! default capabilities: a rule applies when the host's architecture (Go's name: `amd64`,
//! `arm64`) is in its `includes.arches`, every capability of `includes.caps` is in
//! Docker's default set, the running kernel is at least `includes.minKernel`, and nothing
//! in `excludes` matches; the names of the rules that apply are looked up in each ABI's
//! table (a name the ABI does not have is skipped, as libseccomp does). A call without a
//! rule fails with `EPERM` (`defaultErrnoRet`); `clone3` with `ENOSYS`, so that the C library
//! falls back to `clone`, whose namespace flags are refused.
//!
//! ABIs: the host's own (x86_64, or aarch64) and, on x86_64, i386 (32-bit programs run
//! natively, `linux/386`). A foreign platform's step runs in QEMU user mode, which makes the
//! host's system calls on the guest's behalf: the host ABI's filter is the one that applies
//! to it, and a refused call comes back to the guest program with the same errno. Not
//! carried over from Docker: the x32 ABI on x86_64 and 32-bit ARM on an arm64 host, which
//! are refused whole (`EPERM`): no supported platform uses x32, and 32-bit ARM on arm64
//! hosts is not supported by this filter yet.
//!
//! The `fsync` family's success answer (see `super::nosync`) is merged in for the host ABI.
//!
//! The program is a binary search over ranges of system call numbers with the same answer,
//! so a call costs about ten comparisons, not one per allowed name.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Docker's profile (see the module doc).
const PROFILE: &str = include_str!("../../seccomp/docker-default.json");
/// The system call numbers (see the module doc).
const TABLE: &str = include_str!("../../seccomp/syscalls.tsv");

/// Offsets in `struct seccomp_data` (<linux/seccomp.h>).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// `AUDIT_ARCH_*` (<linux/audit.h>).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

/// x32 system calls are x86_64 numbers with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why the program cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// The profile does not parse.
    #[error("the seccomp profile does not parse: {0}")]
    Profile(String),
    /// The profile uses something this code does not know.
    #[error("the seccomp profile uses {0}, which is not supported")]
    Unsupported(String),
    /// The host's architecture has no table.
    #[error("no seccomp filter for this host's architecture ({0})")]
    Architecture(String),
    /// A jump does not fit (the program is too large).
    #[error("the seccomp program is too large")]
    TooLarge,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u16>,
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: String,
    errno_ret: Option<u16>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// What a system call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allow,
    Errno(u16),
}

impl Outcome {
    fn ret(self) -> u32 {
        match self {
            Self::Allow => libc::SECCOMP_RET_ALLOW,
            Self::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
        }
    }
}

/// One argument comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Gt(u64),
    MaskedEq { mask: u64, value: u64 },
}

/// Argument comparisons that must all hold (argument index, comparison).
type Conditions = Vec<(u32, Compare)>;

/// One ABI of the host: its `AUDIT_ARCH_*` and its column in the table.
#[derive(Debug, Clone, Copy)]
struct Abi {
    audit_arch: u32,
    column: usize,
}

/// The answer for one system call number.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf {
    Simple(Outcome),
    /// Rules with conditions, tried in order; `otherwise` when none matches.
    Conditional {
        rules: Vec<(Conditions, Outcome)>,
        otherwise: Outcome,
    },
}

/// The host's architecture as the profile names it (Go's), and its ABIs, its own first.
fn abis() -> Result<(&'static str, Vec<Abi>), SeccompError> {
    let abi = |audit_arch, column| Abi { audit_arch, column };
    match std::env::consts::ARCH {
        "x86_64" => Ok((
            "amd64",
            vec![abi(AUDIT_ARCH_X86_64, 0), abi(AUDIT_ARCH_I386, 1)],
        )),
        "aarch64" => Ok(("arm64", vec![abi(AUDIT_ARCH_AARCH64, 2)])),
        other => Err(SeccompError::Architecture(other.to_owned())),
    }
}

/// The number of each call, per table column.
fn table() -> Vec<BTreeMap<&'static str, u32>> {
    let mut columns = vec![BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    for line in TABLE.lines().filter(|line| !line.starts_with('#')) {
        let mut fields = line.split('\t');
        let Some(name) = fields.next() else {
            continue;
        };
        for (column, field) in columns.iter_mut().zip(fields) {
            if let Ok(number) = field.parse() {
                column.insert(name, number);
            }
        }
    }
    columns
}

/// The running kernel's `major.minor`.
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|name| name.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release)
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Whether a rule applies to a step with `caps` on `arch` under `kernel` (moby's rules).
fn applies(rule: &Rule, arch: &str, caps: &[&str], kernel: (u32, u32)) -> bool {
    if let Some(includes) = &rule.includes {
        if let Some(arches) = &includes.arches {
            if !arches.iter().any(|name| name == arch) {
                return false;
            }
        }
        if let Some(needed) = &includes.caps {
            if !needed.iter().all(|cap| caps.contains(&cap.as_str())) {
                return false;
            }
        }
        if let Some(min) = &includes.min_kernel {
            if kernel < parse_version(min) {
                return false;
            }
        }
    }
    if let Some(excludes) = &rule.excludes {
        if excludes
            .arches
            .as_ref()
            .is_some_and(|arches| arches.iter().any(|name| name == arch))
        {
            return false;
        }
        if excludes
            .caps
            .as_ref()
            .is_some_and(|excluded| excluded.iter().any(|cap| caps.contains(&cap.as_str())))
        {
            return false;
        }
        if let Some(min) = &excludes.min_kernel {
            if kernel >= parse_version(min) {
                return false;
            }
        }
    }
    true
}

fn outcome(action: &str, errno: Option<u16>) -> Result<Outcome, SeccompError> {
    match action {
        "SCMP_ACT_ALLOW" => Ok(Outcome::Allow),
        "SCMP_ACT_ERRNO" => Ok(Outcome::Errno(errno.unwrap_or(libc::EPERM as u16))),
        other => Err(SeccompError::Unsupported(format!("the action {other}"))),
    }
}

fn compare(arg: &Arg) -> Result<(u32, Compare), SeccompError> {
    let compare = match arg.op.as_str() {
        "SCMP_CMP_EQ" => Compare::Eq(arg.value),
        "SCMP_CMP_NE" => Compare::Ne(arg.value),
        "SCMP_CMP_LT" => Compare::Lt(arg.value),
        "SCMP_CMP_GT" => Compare::Gt(arg.value),
        "SCMP_CMP_MASKED_EQ" => Compare::MaskedEq {
            mask: arg.value,
            value: arg.value_two,
        },
        other => return Err(SeccompError::Unsupported(format!("the comparison {other}"))),
    };
    if arg.index > 5 {
        return Err(SeccompError::Unsupported(format!("argument {}", arg.index)));
    }
    Ok((arg.index, compare))
}

/// The answer for every call number of one ABI (calls not listed get the default).
fn decide(
    profile: &Profile,
    numbers: &BTreeMap<&str, u32>,
    arch: &str,
    caps: &[&str],
    kernel: (u32, u32),
) -> Result<(BTreeMap<u32, Leaf>, Outcome), SeccompError> {
    let default = outcome(&profile.default_action, profile.default_errno_ret)?;
    let mut unconditional: BTreeMap<u32, Outcome> = BTreeMap::new();
    let mut conditional: BTreeMap<u32, Vec<(Conditions, Outcome)>> = BTreeMap::new();
    for rule in profile
        .syscalls
        .iter()
        .filter(|rule| applies(rule, arch, caps, kernel))
    {
        let action = outcome(&rule.action, rule.errno_ret)?;
        let conditions = rule
            .args
            .iter()
            .flatten()
            .map(compare)
            .collect::<Result<Vec<_>, _>>()?;
        for name in &rule.names {
            let Some(number) = numbers.get(name.as_str()) else {
                continue;
            };
            if conditions.is_empty() {
                unconditional.insert(*number, action);
            } else {
                conditional
                    .entry(*number)
                    .or_default()
                    .push((conditions.clone(), action));
            }
        }
    }
    let mut leaves: BTreeMap<u32, Leaf> = unconditional
        .iter()
        .map(|(number, action)| (*number, Leaf::Simple(*action)))
        .collect();
    for (number, rules) in conditional {
        let otherwise = unconditional.get(&number).copied().unwrap_or(default);
        leaves.insert(number, Leaf::Conditional { rules, otherwise });
    }
    Ok((leaves, default))
}

/// One BPF instruction whose jumps may still point at "the end of this block".
#[derive(Debug, Clone, Copy)]
struct Instruction {
    filter: libc::sock_filter,
    /// `jt` (true) or `jf` (false) is to be patched to the end of the block.
    to_end: Option<bool>,
}

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(operation: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | operation | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> libc::sock_filter {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(value: u32) -> libc::sock_filter {
    statement(libc::BPF_RET | libc::BPF_K, value)
}

/// The checks of one comparison; a failed check jumps to the end of the rule's block.
fn emit_compare(index: u32, compare: Compare, block: &mut Vec<Instruction>) {
    // Little-endian: the low word of argument `index` first.
    let low = OFFSET_ARGS + 8 * index;
    let high = low + 4;
    let plain = |filter| Instruction {
        filter,
        to_end: None,
    };
    let fail_if_false = |filter| Instruction {
        filter,
        to_end: Some(false),
    };
    let split = |value: u64| ((value >> 32) as u32, value as u32);
    match compare {
        Compare::Eq(value) => {
            let (value_high, value_low) = split(value);
            block.push(plain(load(high)));
            block.push(fail_if_false(jump(libc::BPF_JEQ, value_high, 0, 0)));
            block.push(plain(load(low)));
            block.push(fail_if_false(jump(libc::BPF_JEQ, value_low, 0, 0)));
        }
        Compare::Ne(value) => {
            let (value_high, value_low) = split(value);
            // Different high words: not equal, the comparison holds (skip the low word).
            block.push(plain(load(high)));
            block.push(plain(jump(libc::BPF_JEQ, value_high, 0, 2)));
            block.push(plain(load(low)));
            block.push(Instruction {
                filter: jump(libc::BPF_JEQ, value_low, 0, 0),
                to_end: Some(true),
            });
        }
        Compare::Lt(value) => {
            let (value_high, value_low) = split(value);
            // high < value_high: holds; high > value_high: fails; equal: compare low.
            block.push(plain(load(high)));
            block.push(plain(jump(libc::BPF_JGT, value_high, 0, 1)));
            block.push(Instruction {
                filter: jump(libc::BPF_JA, 0, 0, 0),
                to_end: Some(true),
            });
            block.push(plain(jump(libc::BPF_JEQ, value_high, 0, 2)));
            block.push(plain(load(low)));
            block.push(Instruction {
                filter: jump(libc::BPF_JGE, value_low, 0, 0),
                to_end: Some(true),
            });
        }
        Compare::Gt(value) => {
            let (value_high, value_low) = split(value);
            // high > value_high: holds; high < value_high: fails; equal: compare low.
            block.push(plain(load(high)));
            block.push(plain(jump(libc::BPF_JGT, value_high, 3, 0)));
            block.push(fail_if_false(jump(libc::BPF_JEQ, value_high, 0, 0)));
            block.push(plain(load(low)));
            block.push(fail_if_false(jump(libc::BPF_JGT, value_low, 0, 0)));
        }
        Compare::MaskedEq { mask, value } => {
            let (mask_high, mask_low) = split(mask);
            let (value_high, value_low) = split(value);
            let and = |k| statement(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, k);
            block.push(plain(load(high)));
            block.push(plain(and(mask_high)));
            block.push(fail_if_false(jump(libc::BPF_JEQ, value_high, 0, 0)));
            block.push(plain(load(low)));
            block.push(plain(and(mask_low)));
            block.push(fail_if_false(jump(libc::BPF_JEQ, value_low, 0, 0)));
        }
    }
}

/// A leaf: returns its answer (the accumulator holds the call number on entry).
fn emit_leaf(leaf: &Leaf, out: &mut Vec<libc::sock_filter>) -> Result<(), SeccompError> {
    match leaf {
        Leaf::Simple(outcome) => out.push(ret(outcome.ret())),
        Leaf::Conditional { rules, otherwise } => {
            for (conditions, outcome) in rules {
                let mut block = Vec::new();
                for (index, compare) in conditions {
                    emit_compare(*index, *compare, &mut block);
                }
                block.push(Instruction {
                    filter: ret(outcome.ret()),
                    to_end: None,
                });
                let length = block.len();
                for (position, instruction) in block.iter_mut().enumerate() {
                    let distance =
                        u8::try_from(length - position - 1).map_err(|_| SeccompError::TooLarge)?;
                    match instruction.to_end {
                        Some(true)
                            if instruction.filter.code == (libc::BPF_JMP | libc::BPF_JA) as u16 =>
                        {
                            instruction.filter.k = u32::from(distance);
                        }
                        Some(true) => instruction.filter.jt = distance,
                        Some(false) => instruction.filter.jf = distance,
                        None => {}
                    }
                    out.push(instruction.filter);
                }
            }
            out.push(ret(otherwise.ret()));
        }
    }
    Ok(())
}

/// Ranges of call numbers with one answer, covering 0 to `u32::MAX`.
fn ranges(leaves: &BTreeMap<u32, Leaf>, default: Outcome) -> Vec<(u32, Leaf)> {
    let mut ranges: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |start: u32, leaf: Leaf| {
        if let Some((_, last)) = ranges.last() {
            if *last == leaf && matches!(leaf, Leaf::Simple(_)) {
                return;
            }
        }
        ranges.push((start, leaf));
    };
    let mut next = 0u32;
    for (number, leaf) in leaves {
        if *number > next {
            push(next, Leaf::Simple(default));
        }
        push(*number, leaf.clone());
        next = number.saturating_add(1);
    }
    push(next, Leaf::Simple(default));
    ranges
}

/// A binary search over `ranges` (each starts where the previous ends).
fn emit_tree(ranges: &[(u32, Leaf)], out: &mut Vec<libc::sock_filter>) -> Result<(), SeccompError> {
    if let [(_, leaf)] = ranges {
        return emit_leaf(leaf, out);
    }
    let middle = ranges.len() / 2;
    let mut left = Vec::new();
    emit_tree(&ranges[..middle], &mut left)?;
    let start = ranges[middle].0;
    match u8::try_from(left.len()) {
        Ok(skip) => out.push(jump(libc::BPF_JGE, start, skip, 0)),
        Err(_) => {
            // Too far for an 8-bit jump: a 32-bit unconditional one over the left half.
            out.push(jump(libc::BPF_JGE, start, 0, 1));
            out.push(statement(
                libc::BPF_JMP | libc::BPF_JA,
                u32::try_from(left.len()).map_err(|_| SeccompError::TooLarge)?,
            ));
        }
    }
    out.extend(left);
    emit_tree(&ranges[middle..], out)
}

/// The program for a step: Docker's default profile, with the `fsync` family answered by
/// success on the host ABI when `nosync` is set.
///
/// # Errors
/// [`SeccompError`]: a profile or host this code cannot handle (a unit test makes sure the
/// committed profile is not one).
pub fn docker_default(nosync: bool) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let profile: Profile =
        serde_json::from_str(PROFILE).map_err(|error| SeccompError::Profile(error.to_string()))?;
    let (arch, abis) = abis()?;
    let caps = super::capabilities::DOCKER_DEFAULT
        .iter()
        .map(|(_, name)| *name)
        .collect::<Vec<_>>();
    let kernel = kernel_version();
    let tables = table();
    let mut blocks = Vec::new();
    for (index, Abi { audit_arch, column }) in abis.iter().enumerate() {
        let (mut leaves, default) = decide(&profile, &tables[*column], arch, &caps, kernel)?;
        if nosync && index == 0 {
            for number in super::nosync::CALLS {
                leaves.insert(number as u32, Leaf::Simple(Outcome::Errno(0)));
            }
        }
        let mut block = vec![load(OFFSET_NR)];
        if *audit_arch == AUDIT_ARCH_X86_64 {
            block.push(jump(libc::BPF_JGE, X32_SYSCALL_BIT, 0, 1));
            block.push(ret(default.ret()));
        }
        emit_tree(&ranges(&leaves, default), &mut block)?;
        blocks.push((*audit_arch, block, default));
    }
    // Dispatch on the ABI: per ABI `jeq arch; ja block`, then the default for any other.
    let mut program = vec![load(OFFSET_ARCH)];
    let header = 1 + 2 * blocks.len() + 1;
    let mut offset = header;
    for (position, (audit_arch, block, _)) in blocks.iter().enumerate() {
        let here = 1 + 2 * position;
        program.push(jump(libc::BPF_JEQ, *audit_arch, 0, 1));
        let distance = offset - (here + 2);
        program.push(statement(
            libc::BPF_JMP | libc::BPF_JA,
            u32::try_from(distance).map_err(|_| SeccompError::TooLarge)?,
        ));
        offset += block.len();
    }
    let default = blocks
        .first()
        .map_or(Outcome::Errno(libc::EPERM as u16), |(_, _, default)| {
            *default
        });
    program.push(ret(default.ret()));
    for (_, block, _) in blocks {
        program.extend(block);
    }
    if program.len() > usize::from(u16::MAX) {
        return Err(SeccompError::TooLarge);
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` as the kernel would on (arch, nr, args).
    fn evaluate(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (index, arg) in args.iter().enumerate() {
            let at = 16 + 8 * index;
            data[at..at + 8].copy_from_slice(&arg.to_le_bytes());
        }
        let word = |offset: u32| {
            let offset = offset as usize;
            u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap())
        };
        let mut accumulator = 0u32;
        let mut pc = 0usize;
        loop {
            let instruction = program[pc];
            let code = u32::from(instruction.code);
            let class = code & 0x07;
            match class {
                c if c == libc::BPF_LD => accumulator = word(instruction.k),
                c if c == libc::BPF_ALU => accumulator &= instruction.k,
                c if c == libc::BPF_RET => return instruction.k,
                c if c == libc::BPF_JMP => {
                    let operation = code & 0xf0;
                    if operation == libc::BPF_JA {
                        pc += instruction.k as usize;
                    } else {
                        let taken = match operation {
                            o if o == libc::BPF_JEQ => accumulator == instruction.k,
                            o if o == libc::BPF_JGT => accumulator > instruction.k,
                            o if o == libc::BPF_JGE => accumulator >= instruction.k,
                            other => panic!("jump {other:#x}"),
                        };
                        pc += usize::from(if taken {
                            instruction.jt
                        } else {
                            instruction.jf
                        });
                    }
                }
                other => panic!("class {other:#x}"),
            }
            pc += 1;
        }
    }

    fn numbers(column: usize) -> BTreeMap<&'static str, u32> {
        table().swap_remove(column)
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_program_answers_as_dockers_profile_says() {
        let program = docker_default(true).unwrap();
        let x86_64 = numbers(0);
        let i386 = numbers(1);
        let call =
            |name: &str, args: [u64; 6]| evaluate(&program, AUDIT_ARCH_X86_64, x86_64[name], args);
        let none = [0; 6];
        for name in [
            "read", "write", "openat", "execve", "mmap", "capset", "setuid", "chroot",
        ] {
            assert_eq!(call(name, none), ALLOW, "{name}");
        }
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "bpf",
            "init_module",
            "reboot",
            "swapon",
            "open_by_handle_at",
        ] {
            assert_eq!(call(name, none), EPERM, "{name}");
        }
        assert_eq!(call("clone3", none), ENOSYS);
        // clone: threads and fork yes, new namespaces no.
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call("clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            assert_eq!(call("clone", [flag as u64, 0, 0, 0, 0, 0]), EPERM);
        }
        // personality: only Docker's five values.
        assert_eq!(call("personality", [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
        // socket: AF_ALG (38) and AF_VSOCK (40) no; AF_PACKET (17), AF_INET yes.
        assert_eq!(call("socket", [17, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("socket", [2, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("socket", [38, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(call("socket", [39, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("socket", [40, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(call("socket", [44, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call("socket", [1 << 32, 0, 0, 0, 0, 0]), ALLOW);
        // The fsync family succeeds at once on the host ABI only.
        assert_eq!(call("fsync", none), libc::SECCOMP_RET_ERRNO);
        assert_eq!(
            evaluate(&program, AUDIT_ARCH_I386, i386["fsync"], none),
            ALLOW
        );
        // i386: the same profile with its own numbers.
        for (name, expected) in [("keyctl", EPERM), ("read", ALLOW), ("socketcall", ALLOW)] {
            assert_eq!(
                evaluate(&program, AUDIT_ARCH_I386, i386[name], none),
                expected,
                "i386 {name}"
            );
        }
        // Unknown numbers, x32 and other ABIs: EPERM.
        assert_eq!(evaluate(&program, AUDIT_ARCH_X86_64, 100_000, none), EPERM);
        assert_eq!(
            evaluate(
                &program,
                AUDIT_ARCH_X86_64,
                X32_SYSCALL_BIT | x86_64["read"],
                none
            ),
            EPERM
        );
        assert_eq!(evaluate(&program, AUDIT_ARCH_AARCH64, 63, none), EPERM);
        // Without nosync, fsync is the real call.
        let program = docker_default(false).unwrap();
        assert_eq!(
            evaluate(&program, AUDIT_ARCH_X86_64, x86_64["fsync"], none),
            ALLOW
        );
    }

    #[test]
    fn every_profile_name_has_a_number_or_is_foreign() {
        // Names of other architectures' private calls are expected to be in no column;
        // anything else missing means scripts/seccomp-tables.py needs to run again.
        let foreign = [
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "riscv_flush_icache",
            "riscv_hwprobe",
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
            "swapcontext",
            "sync_file_range2",
            "recv",
            "send",
        ];
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        let tables = table();
        for rule in &profile.syscalls {
            for name in &rule.names {
                let known = tables
                    .iter()
                    .any(|column| column.contains_key(name.as_str()));
                assert!(known || foreign.contains(&name.as_str()), "{name}");
            }
        }
    }

    #[test]
    fn rules_apply_as_moby_decides() {
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        let caps = ["CAP_SYS_CHROOT"];
        let find = |name: &str| {
            profile
                .syscalls
                .iter()
                .filter(|rule| rule.names.iter().any(|n| n == name))
                .collect::<Vec<_>>()
        };
        // chroot needs CAP_SYS_CHROOT, which Docker's set has; reboot needs CAP_SYS_BOOT.
        assert!(
            find("chroot")
                .iter()
                .any(|rule| applies(rule, "amd64", &caps, (6, 1)))
        );
        assert!(
            !find("reboot")
                .iter()
                .any(|rule| applies(rule, "amd64", &caps, (6, 1)))
        );
        // ptrace: from Linux 4.8 on.
        let ptrace = find("ptrace");
        assert!(
            ptrace
                .iter()
                .any(|rule| applies(rule, "amd64", &caps, (4, 8)))
        );
        assert!(
            !ptrace
                .iter()
                .any(|rule| applies(rule, "amd64", &caps, (4, 4)))
        );
        // arch_prctl: amd64 only.
        assert!(
            find("arch_prctl")
                .iter()
                .all(|rule| !applies(rule, "arm64", &caps, (6, 1)))
        );
        assert_eq!(parse_version("6.18.44-fc-v1272"), (6, 18));
    }
}
