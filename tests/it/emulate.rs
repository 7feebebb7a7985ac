//! RUN under QEMU user emulation, through the system's binfmt_misc handlers: a real
//! package installation in the Debian arm64 fixture, judged by goblin on the result.

use xbuild::sandbox::{StepCommand, StepOutcome};

use crate::sandbox::{run_spec, spec};
use crate::util::{Need, fixtures_dir, require};

#[test]
fn debian_arm64_apt_get_install_hello_lands_in_the_upper_directory() {
    if !require(&[Need::Root, Need::Fixtures, Need::Binfmt("aarch64")]) {
        return;
    }
    let lower = [fixtures_dir().unwrap().join("rootfs/debian/linux-arm64")];
    let (mut step, dir) = spec(
        &lower,
        "linux/arm64",
        StepCommand::sh("apt-get update && apt-get install -y --no-install-recommends hello"),
    );
    step.env = vec!["DEBIAN_FRONTEND=noninteractive".into()];
    let ran = run_spec(&step, dir);
    let tail = ran
        .stdout
        .iter()
        .chain(&ran.stderr)
        .rev()
        .take(30)
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        matches!(ran.result, Ok(StepOutcome::Exited { code: 0 })),
        "{:?}\n{}",
        ran.result,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let hello = std::fs::read(ran.upper.join("usr/bin/hello"))
        .expect("/usr/bin/hello in the upper directory");
    let elf = goblin::elf::Elf::parse(&hello).unwrap();
    assert_eq!(elf.header.e_machine, goblin::elf::header::EM_AARCH64);
    assert!(elf.is_64 && elf.little_endian);
    assert_eq!(
        xbuild::platform::elf_platform(&hello).unwrap().to_string(),
        "linux/arm64"
    );
    // What the sandbox bound in is not part of the change set.
    assert!(!ran.upper.join("etc/resolv.conf").exists());
    assert!(!ran.upper.join("etc/hosts").exists());
}
