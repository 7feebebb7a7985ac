//! A process killed with SIGKILL while writing leaves the store readable, and the next run
//! works.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{run, stderr, stdout, temp_dir, xbuild};

/// Writes `files` files of `megabytes` MB of incompressible bytes (a xorshift stream).
fn make_big_tree(root: &Path, files: usize, megabytes: usize) {
    fs::create_dir_all(root).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buffer = vec![0u8; 1 << 20];
    for index in 0..files {
        let mut file =
            std::io::BufWriter::new(fs::File::create(root.join(format!("blob{index}"))).unwrap());
        for _ in 0..megabytes {
            for chunk in buffer.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            file.write_all(&buffer).unwrap();
        }
    }
}

/// Waits until the store's tmp/ holds a file of at least `bytes` (the child is mid-write),
/// then kills the child with SIGKILL. Returns false if the child finished first.
fn kill_mid_write(child: &mut Child, store: &Path, bytes: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let writing = fs::read_dir(store.join("tmp")).ok().is_some_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.metadata().is_ok_and(|meta| meta.len() >= bytes))
        });
        if writing {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the child neither wrote nor finished");
}

fn assert_store_readable(dir: &Path) {
    let images = run(xbuild(dir).arg("images"));
    assert!(images.status.success(), "images: {}", stderr(&images));
    let fsck = run(xbuild(dir).arg("fsck"));
    assert!(
        fsck.status.success(),
        "fsck: {}{}",
        stdout(&fsck),
        stderr(&fsck)
    );
}

#[test]
fn sigkill_during_import_and_load_leaves_the_store_readable() {
    let dir = temp_dir();
    let tree = dir.path().join("tree");
    make_big_tree(&tree, 3, 64);
    let store = dir.path().join("store");
    // A first image, so the store has content to damage.
    let small = dir.path().join("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("f"), "x").unwrap();
    assert!(
        run(xbuild(dir.path()).arg("import").arg(&small).arg("small:1"))
            .status
            .success()
    );

    let mut child = xbuild(dir.path())
        .arg("import")
        .arg(&tree)
        .arg("big:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        kill_mid_write(&mut child, &store, 4 << 20),
        "import finished before the kill"
    );
    assert_store_readable(dir.path());
    let images = stdout(&run(xbuild(dir.path()).arg("images")));
    assert!(images.contains("small"), "{images}");
    assert!(!images.contains("big"), "{images}");

    // The next run works, and prune clears what the killed one left in tmp/.
    let again = run(xbuild(dir.path()).arg("import").arg(&tree).arg("big:1"));
    assert!(again.status.success(), "{}", stderr(&again));
    assert_store_readable(dir.path());
    assert!(
        run(xbuild(dir.path()).args(["prune", "--keep-cache"]))
            .status
            .success()
    );
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);

    // Same for load.
    let archive = dir.path().join("big.tar");
    assert!(
        run(xbuild(dir.path())
            .args(["save", "big:1", "-o"])
            .arg(&archive))
        .status
        .success()
    );
    let other = temp_dir();
    let other_store = other.path().join("store");
    assert!(
        run(xbuild(other.path())
            .arg("import")
            .arg(&small)
            .arg("small:1"))
        .status
        .success()
    );
    let mut child = xbuild(other.path())
        .args(["load", "-i"])
        .arg(&archive)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        kill_mid_write(&mut child, &other_store, 4 << 20),
        "load finished before the kill"
    );
    assert_store_readable(other.path());
    let again = run(xbuild(other.path()).args(["load", "-i"]).arg(&archive));
    assert!(again.status.success(), "{}", stderr(&again));
    assert_store_readable(other.path());
    let images = stdout(&run(xbuild(other.path()).arg("images")));
    assert!(
        images.contains("big") && images.contains("small"),
        "{images}"
    );
}

#[test]
fn concurrent_processes_all_land_their_names_and_gc_waits_for_users() {
    let dir = temp_dir();
    let children: Vec<Child> = (0..6)
        .map(|index| {
            let source = dir.path().join(format!("rootfs{index}"));
            fs::create_dir_all(&source).unwrap();
            fs::write(source.join("f"), format!("{index}")).unwrap();
            xbuild(dir.path())
                .arg("import")
                .arg(&source)
                .arg(format!("app:{index}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let images = stdout(&run(xbuild(dir.path()).arg("images")));
    let tags: Vec<&str> = images
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    for index in 0..6 {
        assert!(
            tags.contains(&index.to_string().as_str()),
            "app:{index} missing:\n{images}"
        );
    }
    assert_eq!(images.lines().count(), 7, "{images}");

    // While another process uses the store, prune waits for it.
    let store = xbuild::store::Store::open(dir.path().join("store")).unwrap();
    let mut prune = xbuild(dir.path())
        .arg("prune")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "prune did not wait for the store's user"
    );
    drop(store);
    let output = prune.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
