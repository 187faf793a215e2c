//! A store on a small tmpfs and on a small ext4 (a loop-mounted image), filled up by a real
//! `annal import`: no command raises a signal, reading commands work on the full disk and
//! change no block, writing ones say the disk is full and leave no stray file, and once there
//! is room the import resumes with every acknowledged event kept. Then the file system is
//! remounted read-only, where `verify` and the reading commands still work.
//!
//! Mounting needs root and `mkfs.ext4` (CI runs as root, and `scripts/test` installs e2fsprogs);
//! without them the test fails, saying so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A small file system mounted on a temporary directory, unmounted when dropped.
struct Mounted {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The image file behind a loop mount.
    _image: Option<PathBuf>,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run a mount command");
    assert!(
        out.status.success(),
        "{cmd:?} failed (this test mounts file systems and needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mounted {
    fn tmpfs(size: &str) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(&path),
        );
        Mounted {
            _dir: dir,
            path,
            _image: None,
        }
    }

    /// An ext4 file system in an image file of `mib` MiB, loop-mounted.
    fn ext4(mib: u64) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&path),
        );
        Mounted {
            _dir: dir,
            path,
            _image: Some(image),
        }
    }

    fn remount_read_only(&self) {
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.path),
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // A loop device goes with the unmount, its image with the temporary directory.
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the file system but about `room` MiB with a file the test can delete later.
fn fill_but(fs: &Mounted, room: u64) -> PathBuf {
    let filler = fs.path.join("filler");
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&fs.path)
        .output()
        .unwrap();
    let avail: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let size = avail.saturating_sub(room << 20);
    let f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0xA5u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut &f, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    filler
}

fn annal(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    common::run_with(dir, args, input)
}

/// No signal: a status code, whatever it is.
fn no_signal(o: &Output, what: &str) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!(
            "{what} died of a signal: {:?}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn lines(from: usize, n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in from..from + n {
        s.push_str(&format!(
            "{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{{\"n\":{i},\"pad\":\"{}\"}}}}\n",
            i % 7,
            "x".repeat(400)
        ));
    }
    s.into_bytes()
}

fn blocks(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::metadata(&p).unwrap().blocks();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_tmpfs_keeps_every_acknowledged_event_and_raises_no_signal() {
    let fs = Mounted::tmpfs("24m");
    full_disk(&fs, "always");
}

#[test]
fn a_full_ext4_keeps_every_acknowledged_event_and_raises_no_signal() {
    let fs = Mounted::ext4(32);
    full_disk(&fs, "always");
}

/// Under `never` the write map's pages are faulted in ahead of the writes by a thread of its
/// own, which must not raise a signal either when the disk fills.
#[test]
fn a_full_ext4_under_never_keeps_every_acknowledged_event_and_raises_no_signal() {
    let fs = Mounted::ext4(32);
    full_disk(&fs, "never");
}

#[test]
fn a_full_tmpfs_under_never_keeps_every_acknowledged_event_and_raises_no_signal() {
    let fs = Mounted::tmpfs("24m");
    full_disk(&fs, "never");
}

/// The scenario on a mounted file system with some 3 MiB left, importing under policy `fsync`:
/// a real import fills it, every command is checked on the full disk, then room is made and
/// the import resumes; last, the file system is remounted read-only.
fn full_disk(fs: &Mounted, fsync: &str) {
    let dir = fs.path.join("store");
    let filler = fill_but(fs, 3);
    // 20,000 events of ~450 bytes: far more than 3 MiB.
    let o = annal(
        &dir,
        &["import", "--fsync", fsync, "--json"],
        &lines(0, 20_000),
    );
    let code = no_signal(&o, "import on a filling disk");
    assert_ne!(code, 0, "the disk never filled up");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let acked = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(acked > 100, "only {acked} events fitted");

    // Reading commands work on the full disk, and allocate nothing (a mapped read of a hole
    // on tmpfs would allocate a page, or raise SIGBUS when none is left).
    let before = blocks(&dir);
    for args in [
        &["stats"][..],
        &["verify"],
        &["read-all", "--json"],
        &["streams"],
    ] {
        let o = annal(&dir, args, b"");
        let code = no_signal(&o, args[0]);
        assert!(
            code == 0 || (args[0] == "verify" && code == 4),
            "{args:?}: exit {code}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(blocks(&dir), before, "{args:?} changed what is allocated");
    }
    let all = annal(&dir, &["read-all", "--json"], b"");
    assert_eq!(String::from_utf8_lossy(&all.stdout).lines().count(), acked);

    // A writing command on the full disk fails with the I/O status (7), saying so, and leaves
    // no temporary file.
    // (On ext4 the last free blocks may still take a STATE file: then it succeeds.)
    let o = annal(&dir, &["append", "s-0", "--type", "T", "--data", "{}"], b"");
    let appended = match no_signal(&o, "append on a full disk") {
        0 => 1,
        7 => {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("No space left on device"), "{err}");
            0
        }
        c => panic!("append on a full disk: exit {c}"),
    };
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Room again: the import resumes, and every acknowledged event is still there.
    std::fs::remove_file(filler).unwrap();
    let o = annal(&dir, &["import", "--fsync", fsync], &lines(acked, 100));
    assert_eq!(
        no_signal(&o, "import after freeing space"),
        0,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let all = annal(&dir, &["read-all", "--json"], b"");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), acked + appended + 100);
    let data: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "T" && e["data"]["n"].is_u64())
        .collect();
    for (i, e) in data.iter().enumerate() {
        assert_eq!(e["data"]["n"], i as u64, "event {i}");
    }
    assert_eq!(no_signal(&annal(&dir, &["verify"], b""), "verify"), 0);

    // A read-only mount: verify and the reading commands work, writing ones fail cleanly.
    fs.remount_read_only();
    for args in [&["verify"][..], &["stats"], &["read", "s-3"]] {
        let o = annal(&dir, args, b"");
        assert_eq!(
            no_signal(&o, args[0]),
            0,
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = annal(&dir, &["append", "s-0", "--type", "T", "--data", "{}"], b"");
    // The I/O status: a file cannot be written.
    assert_eq!(no_signal(&o, "append on a read-only mount"), 7);
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only file system"));
}
