//! The initramfs writer checked with GNU cpio as the oracle: build a tree with
//! every kind of entry, write it (gzip, zstd, none), unpack it as root with
//! `cpio -idm --no-absolute-filenames`, and compare what landed on disk with
//! the tree: kinds, content, modes (setuid, sticky …), owners, mtimes, link
//! targets, device numbers and hardlink grouping.
//!
//! Needs root (devices, owners) and `cpio`, `gzip`, `zstd` on the PATH; it
//! skips with a notice otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use build_image::initramfs::{self, InitramfsReport};
use build_image::recipe::Compression;
use build_image::tree::{Content, Inode, InodeId, Kind, Meta, Tree};

const EPOCH: i64 = 1_700_000_000;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn meta(mode: u32, uid: u32, gid: u32, mtime: i64) -> Meta {
    Meta { mode, uid, gid, mtime, mtime_nsec: 0, xattrs: BTreeMap::new() }
}

fn node(kind: Kind, mode: u32) -> Inode {
    Inode { meta: meta(mode, 0, 0, EPOCH - 1000), kind }
}

/// A tree with regular files (one from a host file, over several gzip
/// blocks), an empty file, symlinks, a hardlink pair and a triple, a fifo,
/// char and block devices, setuid/setgid/sticky modes and uid/gid 1000.
fn sample_tree(host_dir: &Path) -> Tree {
    let mut t = Tree::new(EPOCH);
    let big_path = host_dir.join("big.bin");
    let big: Vec<u8> = (0..2_500_000u32).map(|i| ((i * 7) ^ (i >> 9)) as u8).collect();
    fs::write(&big_path, &big).unwrap();
    t.insert(b"/usr/lib/firmware/big.bin", node(Kind::File(Content::host(&big_path).unwrap()), 0o644)).unwrap();
    t.insert(b"/init", node(Kind::File(Content::bytes(b"#!/bin/sh\nexec /bin/sh\n".to_vec())), 0o755)).unwrap();
    t.insert(b"/etc/empty", node(Kind::File(Content::bytes(Vec::new())), 0o644)).unwrap();
    t.insert(b"/etc/hostname", node(Kind::File(Content::bytes(b"appliance\n".to_vec())), 0o644)).unwrap();
    t.insert(b"/usr/bin/su", node(Kind::File(Content::bytes(b"\x7fELF su".to_vec())), 0o4755)).unwrap();
    t.insert(b"/usr/bin/wall", node(Kind::File(Content::bytes(b"\x7fELF wall".to_vec())), 0o2755)).unwrap();
    t.insert(b"/usr/bin/busybox", node(Kind::File(Content::bytes(b"\x7fELF busybox, linked thrice".to_vec())), 0o755)).unwrap();
    t.hardlink(b"/usr/bin/ls", b"/usr/bin/busybox").unwrap();
    t.hardlink(b"/usr/sbin/init", b"/usr/bin/busybox").unwrap();
    t.insert(b"/etc/a", node(Kind::File(Content::bytes(b"pair".to_vec())), 0o600)).unwrap();
    t.hardlink(b"/etc/b", b"/etc/a").unwrap();
    t.insert(b"/bin", node(Kind::Symlink(b"usr/bin".to_vec()), 0o777)).unwrap();
    t.insert(b"/etc/mtab", node(Kind::Symlink(b"../proc/self/mounts".to_vec()), 0o777)).unwrap();
    t.insert(b"/tmp", node(Kind::Dir(BTreeMap::new()), 0o1777)).unwrap();
    t.insert(b"/var/mail", node(Kind::Dir(BTreeMap::new()), 0o2775)).unwrap();
    t.insert(b"/dev/console", node(Kind::CharDev { major: 5, minor: 1 }, 0o600)).unwrap();
    t.insert(b"/dev/null", node(Kind::CharDev { major: 1, minor: 3 }, 0o666)).unwrap();
    t.insert(b"/dev/vda", node(Kind::BlockDev { major: 254, minor: 0 }, 0o660)).unwrap();
    t.insert(b"/run/initctl", node(Kind::Fifo, 0o600)).unwrap();
    let user = Inode { meta: meta(0o750, 1000, 1000, EPOCH - 5), kind: Kind::Dir(BTreeMap::new()) };
    t.insert(b"/home/user", user).unwrap();
    let notes = Inode { meta: meta(0o640, 1000, 1000, 1_000_000_000), kind: Kind::File(Content::bytes(b"notes".to_vec())) };
    t.insert(b"/home/user/notes.txt", notes).unwrap();
    let link = Inode { meta: meta(0o777, 1000, 1000, EPOCH - 5), kind: Kind::Symlink(b"notes.txt".to_vec()) };
    t.insert(b"/home/user/latest", link).unwrap();
    t
}

fn content_of(c: &Content) -> Vec<u8> {
    let r = c.open().unwrap();
    let mut v = vec![0u8; c.len() as usize];
    r.read_exact_at(&mut v, 0).unwrap();
    v
}

/// Compare the unpacked directory with the tree; returns every mismatch.
fn compare(tree: &Tree, root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let counts = tree.link_counts();
    // Host inode number of each tree inode (non-directories), to check grouping.
    let mut host_ino: BTreeMap<InodeId, (u64, String)> = BTreeMap::new();
    let mut seen_host: BTreeMap<u64, InodeId> = BTreeMap::new();
    let mut n_tree = 0usize;
    tree.walk(|v| {
        n_tree += 1;
        if v.depth == 0 {
            return;
        }
        let rel = String::from_utf8_lossy(v.path).into_owned();
        let p = root.join(&rel);
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                bad.push(format!("{rel}: missing after unpacking ({e})"));
                return;
            }
        };
        let inode = tree.inode(v.ino);
        let ft = md.file_type();
        let kind_ok = match &inode.kind {
            Kind::Dir(_) => ft.is_dir(),
            Kind::File(_) => ft.is_file(),
            Kind::Symlink(_) => ft.is_symlink(),
            Kind::CharDev { .. } => ft.is_char_device(),
            Kind::BlockDev { .. } => ft.is_block_device(),
            Kind::Fifo => ft.is_fifo(),
            Kind::Socket => ft.is_socket(),
        };
        if !kind_ok {
            bad.push(format!("{rel}: expected a {}, found {:?}", inode.kind.word(), ft));
            return;
        }
        if md.mode() != inode.st_mode() && !ft.is_symlink() {
            bad.push(format!("{rel}: mode {:o}, expected {:o}", md.mode(), inode.st_mode()));
        }
        if (md.uid(), md.gid()) != (inode.meta.uid, inode.meta.gid) {
            bad.push(format!("{rel}: owner {}:{}, expected {}:{}", md.uid(), md.gid(), inode.meta.uid, inode.meta.gid));
        }
        match &inode.kind {
            Kind::File(c) => {
                let got = fs::read(&p).unwrap();
                if got != content_of(c) {
                    bad.push(format!("{rel}: content differs ({} bytes, expected {})", got.len(), c.len()));
                }
                if md.mtime() != inode.meta.mtime {
                    bad.push(format!("{rel}: mtime {}, expected {}", md.mtime(), inode.meta.mtime));
                }
                if md.nlink() != u64::from(counts[v.ino]) {
                    bad.push(format!("{rel}: nlink {}, expected {}", md.nlink(), counts[v.ino]));
                }
            }
            Kind::Symlink(target) => match fs::read_link(&p) {
                Ok(t) if t.as_os_str().as_bytes() == &target[..] => {}
                other => bad.push(format!("{rel}: link target {other:?}, expected {}", String::from_utf8_lossy(target))),
            },
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let got = (libc::major(md.rdev()), libc::minor(md.rdev()));
                if got != (*major, *minor) {
                    bad.push(format!("{rel}: device {}:{}, expected {major}:{minor}", got.0, got.1));
                }
            }
            _ => {}
        }
        if !ft.is_dir() {
            match host_ino.get(&v.ino) {
                Some((ino, first)) if *ino != md.ino() => {
                    bad.push(format!("{rel}: should be a hardlink of {first} but is a separate file"));
                }
                Some(_) => {}
                None => {
                    host_ino.insert(v.ino, (md.ino(), rel.clone()));
                    if let Some(other) = seen_host.insert(md.ino(), v.ino) {
                        if other != v.ino {
                            bad.push(format!("{rel}: hardlinked on disk to a different tree inode"));
                        }
                    }
                }
            }
        }
    });
    // Nothing extra on disk.
    let out = Command::new("find").arg(".").current_dir(root).output().unwrap();
    let n_disk = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    if n_disk != n_tree {
        bad.push(format!("{n_disk} entries unpacked, the tree has {n_tree}"));
    }
    bad
}

/// Write the tree, unpack it with GNU cpio in a fresh directory; returns it.
fn unpack(tree: &Tree, compression: Compression, work: &Path) -> (tempfile::TempDir, InitramfsReport) {
    let file = work.join(format!("initramfs.{compression:?}"));
    let mut f = fs::File::create(&file).unwrap();
    let report = initramfs::write(tree, compression, None, &mut f).unwrap();
    drop(f);
    assert_eq!(report.compressed_bytes, fs::metadata(&file).unwrap().len());
    let dir = tempfile::tempdir_in(work).unwrap();
    let cat = match compression {
        Compression::Gzip => "gzip -dc",
        Compression::Zstd => "zstd -dc",
        Compression::None => "cat",
    };
    let script = format!("set -e; {cat} '{}' | cpio -idm --no-absolute-filenames --quiet", file.display());
    let out = Command::new("sh").arg("-c").arg(&script).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{script}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    (dir, report)
}

#[test]
fn gnu_cpio_unpacks_what_the_tree_holds() {
    if !is_root() {
        eprintln!("NOTICE: not root; skipping the GNU cpio unpack test (devices and owners need root)");
        return;
    }
    for tool in ["cpio", "gzip", "zstd"] {
        if !have(tool) {
            eprintln!("NOTICE: {tool} not found; skipping the GNU cpio unpack test");
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let tree = sample_tree(work.path());
    let mut sizes = Vec::new();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (dir, report) = unpack(&tree, compression, work.path());
        let bad = compare(&tree, dir.path());
        assert!(bad.is_empty(), "{compression:?}: the unpacked tree differs:\n  {}", bad.join("\n  "));
        sizes.push(report.uncompressed_bytes);
    }
    assert!(sizes.iter().all(|s| *s == sizes[0]), "same cpio for every compression: {sizes:?}");
}

/// The comparison is not vacuous: it notices a wrong mode, owner, content,
/// device and a broken hardlink.
#[test]
fn the_comparison_catches_differences() {
    if !is_root() || !have("cpio") || !have("gzip") {
        eprintln!("NOTICE: needs root, cpio and gzip; skipped");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = sample_tree(work.path());
    let (dir, _) = unpack(&tree, Compression::Gzip, work.path());
    let d = dir.path();
    assert!(compare(&tree, d).is_empty());
    let chmod = |p: &str, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join(p), fs::Permissions::from_mode(m)).unwrap()
    };
    chmod("usr/bin/su", 0o755);
    std::os::unix::fs::lchown(d.join("home/user/notes.txt"), Some(0), Some(0)).unwrap();
    fs::write(d.join("etc/hostname"), b"other\n").unwrap();
    fs::remove_file(d.join("dev/null")).unwrap();
    let status = Command::new("mknod").arg(d.join("dev/null")).args(["c", "1", "5"]).status().unwrap();
    assert!(status.success());
    chmod("dev/null", 0o666);
    fs::remove_file(d.join("etc/b")).unwrap();
    fs::write(d.join("etc/b"), b"pair").unwrap();
    std::os::unix::fs::chown(d.join("etc/b"), Some(0), Some(0)).unwrap();
    chmod("etc/b", 0o600);
    let bad = compare(&tree, d).join("\n");
    for expect in ["usr/bin/su: mode", "home/user/notes.txt: owner", "etc/hostname: content", "dev/null: device", "etc/b"] {
        assert!(bad.contains(expect), "missed {expect}:\n{bad}");
    }
}
