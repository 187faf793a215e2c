//! A store on a small tmpfs, filled up by a real `annal import`: no command raises a signal,
//! reading commands work on the full disk and change no block, writing ones say the disk is
//! full and leave no stray file, and once there is room the import resumes with every
//! acknowledged event kept.
//!
//! Mounting a tmpfs needs root (CI runs as root); without it the test fails, saying so.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { _dir: dir, path }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn annal(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Fed from a thread while stdout is read, so neither pipe fills up; the child may stop
    // reading when the disk is full.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
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
    let fs = Tmpfs::mount("3m");
    let dir = fs.path.join("store");
    // 20,000 events of ~450 bytes: far more than 3 MiB.
    let o = annal(&dir, &["import", "--fsync", "always"], &lines(0, 20_000));
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

    // A writing command on the full disk fails, saying so, and leaves no temporary file.
    let o = annal(&dir, &["append", "s-0", "--type", "T", "--data", "{}"], b"");
    assert_eq!(no_signal(&o, "append on a full disk"), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Room again: the import resumes, and every acknowledged event is still there.
    fs.resize("64m");
    let o = annal(&dir, &["import", "--fsync", "always"], &lines(acked, 100));
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
    assert_eq!(events.len(), acked + 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["data"]["n"], i as u64, "event {i}");
    }
    assert_eq!(no_signal(&annal(&dir, &["verify"], b""), "verify"), 0);

    // A read-only mount: verify and the reading commands work, writing ones fail cleanly.
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_eq!(no_signal(&o, "append on a read-only mount"), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only file system"));
}
