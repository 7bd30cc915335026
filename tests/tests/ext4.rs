//! The ext4 writer against the real tools: e2fsck, resize2fs, and the
//! kernel itself (loop mount, as root) reading every entry back.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use build_image::disk::Region;
use build_image::fs::ext4::{self, Ext4Options};
use build_image::fs::FsParams;
use build_image::tree::{Content, Inode, InodeId, Kind, Meta, Tree};
use sha2::Digest;

const EPOCH: i64 = 1_700_000_000;

fn params() -> FsParams {
    FsParams { label: "e2e".into(), uuid: uuid::Uuid::from_bytes([0x42; 16]), seed: [7; 32], epoch: EPOCH }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn build_at(tree: &Tree, path: &Path, size: u64) -> Result<build_image::fs::FsReport, ext4::Ext4Error> {
    let f = File::options().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    f.set_len(size).unwrap();
    ext4::write(tree, Region::new(&f, 0, size, "test"), &params(), &Ext4Options::default())
}

fn fsck(path: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(path).output().expect("e2fsck must be installed (e2fsprogs)");
    assert!(
        out.status.success(),
        "e2fsck -fn {} failed ({}):\n{}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(path: &Path) -> String {
    let mut f = File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn file(mode: u32, c: Content) -> Inode {
    Inode { meta: Meta::new(mode, EPOCH - 1000), kind: Kind::File(c) }
}

/// A tree with every awkward case we know of. Host files live in `host`.
fn awkward_tree(host: &Path) -> Tree {
    let mut t = Tree::new(EPOCH);
    let ins = |t: &mut Tree, p: &str, i: Inode| t.insert(p.as_bytes(), i).unwrap();
    ins(&mut t, "modes/setuid", file(0o4755, Content::bytes(b"#!/bin/sh\n".to_vec())));
    ins(&mut t, "modes/setgid", file(0o2711, Content::bytes(b"x".to_vec())));
    ins(&mut t, "modes/sticky", Inode { meta: Meta::new(0o1777, EPOCH), kind: Kind::Dir(BTreeMap::new()) });
    ins(&mut t, "modes/none", file(0o000, Content::bytes(b"locked".to_vec())));
    let mut big = file(0o640, Content::bytes(b"owned".to_vec()));
    big.meta.uid = 100_000;
    big.meta.gid = 4_000_000_000;
    ins(&mut t, "owners/big", big);
    let mut small = file(0o600, Content::bytes(Vec::new()));
    small.meta.uid = 1000;
    small.meta.gid = 65535;
    ins(&mut t, "owners/small-empty", small);
    ins(&mut t, "links/fast", Inode { meta: Meta::new(0o777, EPOCH), kind: Kind::Symlink(b"../modes/setuid".to_vec()) });
    let slow: Vec<u8> = (0..40).flat_map(|i| format!("dir{i:02}/").into_bytes()).chain(*b"end").collect();
    ins(&mut t, "links/slow", Inode { meta: Meta::new(0o777, EPOCH), kind: Kind::Symlink(slow) });
    ins(&mut t, "links/exactly60", Inode { meta: Meta::new(0o777, EPOCH), kind: Kind::Symlink(vec![b'a'; 60]) });
    ins(&mut t, "links/exactly59", Inode { meta: Meta::new(0o777, EPOCH), kind: Kind::Symlink(vec![b'b'; 59]) });
    ins(&mut t, "hard/a", file(0o644, Content::bytes(b"shared content".to_vec())));
    t.hardlink(b"hard/b", b"hard/a").unwrap();
    t.hardlink(b"hard/sub/c", b"hard/a").unwrap();
    ins(&mut t, "dev/fifo", Inode { meta: Meta::new(0o644, EPOCH), kind: Kind::Fifo });
    ins(&mut t, "dev/sock", Inode { meta: Meta::new(0o755, EPOCH), kind: Kind::Socket });
    ins(&mut t, "dev/null", Inode { meta: Meta::new(0o666, EPOCH), kind: Kind::CharDev { major: 1, minor: 3 } });
    ins(&mut t, "dev/sda1", Inode { meta: Meta::new(0o660, EPOCH), kind: Kind::BlockDev { major: 8, minor: 1 } });
    ins(&mut t, "dev/bigminor", Inode { meta: Meta::new(0o600, EPOCH), kind: Kind::CharDev { major: 511, minor: 70000 } });
    ins(&mut t, "dev/bigblk", Inode { meta: Meta::new(0o600, EPOCH), kind: Kind::BlockDev { major: 259, minor: 3 } });
    // xattrs: small (in the inode), large (a block), capabilities, ACL.
    let mut x = file(0o755, Content::bytes(b"ping".to_vec()));
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes()); // cap_net_raw
    x.meta.xattrs.insert(b"security.capability".to_vec(), cap);
    x.meta.xattrs.insert(b"user.small".to_vec(), b"v".to_vec());
    ins(&mut t, "xattr/small", x);
    let mut x = file(0o644, Content::bytes(b"many".to_vec()));
    for i in 0..20 {
        x.meta.xattrs.insert(format!("user.attr{i:02}").into_bytes(), vec![b'0' + i as u8; 40 + i]);
    }
    x.meta.xattrs.insert(b"trusted.big".to_vec(), vec![0xAB; 1500]);
    x.meta.xattrs.insert(b"user.empty".to_vec(), Vec::new());
    ins(&mut t, "xattr/large", x);
    let mut acl = Vec::new();
    acl.extend_from_slice(&2u32.to_le_bytes());
    for (tag, perm, id) in [(1u16, 7u16, u32::MAX), (2, 5, 1234), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 4, u32::MAX)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let mut d = Inode { meta: Meta::new(0o755, EPOCH), kind: Kind::Dir(BTreeMap::new()) };
    d.meta.xattrs.insert(b"system.posix_acl_access".to_vec(), acl.clone());
    d.meta.xattrs.insert(b"system.posix_acl_default".to_vec(), acl);
    d.meta.xattrs.insert(b"security.selinux".to_vec(), b"system_u:object_r:etc_t:s0\0".to_vec());
    ins(&mut t, "xattr/acl-dir", d);
    // Long names: 255 bytes of UTF-8.
    let long = format!("{}x", "é".repeat(127));
    assert_eq!(long.len(), 255);
    ins(&mut t, &format!("names/{long}"), file(0o644, Content::bytes(b"long name".to_vec())));
    ins(&mut t, &format!("names/{}", "n".repeat(255)), file(0o644, Content::bytes(Vec::new())));
    // A directory of 5000 entries (htree), some of them directories.
    for i in 0..5000u32 {
        let tail = if i % 7 == 0 { "é日" } else { "z" };
        let p = format!("big/entry-{i:05}-{}", tail.repeat((i % 40) as usize));
        if i % 500 == 0 {
            ins(&mut t, &p, Inode { meta: Meta::new(0o755, EPOCH), kind: Kind::Dir(BTreeMap::new()) });
        } else {
            ins(&mut t, &p, file(0o644, Content::bytes(format!("{i}").into_bytes())));
        }
    }
    // A directory whose htree needs an interior level (> 507 leaves).
    for i in 0..10000u32 {
        let p = format!("wide/{i:06}{}", "w".repeat(234));
        ins(&mut t, &p, Inode { meta: Meta::new(0o644, EPOCH), kind: Kind::Fifo });
    }
    // Sparse, empty, odd-sized and several-MiB files from the host.
    let sparse = host.join("sparse");
    let f = File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&vec![0x11; 9000], (8 << 20) + 100).unwrap();
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    drop(f);
    let c = Content::host(&sparse).unwrap();
    ins(&mut t, "files/sparse", file(0o644, c));
    // 1500 data islands: more extents than one tree level holds.
    let islands = host.join("islands");
    let f = File::create(&islands).unwrap();
    f.set_len(1500 * 3 * 4096).unwrap();
    for i in 0..1500u64 {
        f.write_all_at(&i.to_le_bytes(), i * 3 * 4096 + 17).unwrap();
    }
    drop(f);
    ins(&mut t, "files/islands", file(0o644, Content::host(&islands).unwrap()));
    let hole_only = host.join("hole-only");
    File::create(&hole_only).unwrap().set_len(1 << 20).unwrap();
    ins(&mut t, "files/hole-only", file(0o644, Content::host(&hole_only).unwrap()));
    ins(&mut t, "files/empty", file(0o644, Content::bytes(Vec::new())));
    ins(&mut t, "files/odd", file(0o644, Content::bytes((0..4097u32).map(|i| i as u8).collect::<Vec<u8>>())));
    let large = host.join("large");
    let data: Vec<u8> = (0..(6u64 << 20) + 123).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&large, &data).unwrap();
    ins(&mut t, "files/large", file(0o644, Content::host(&large).unwrap()));
    // An old mtime with nanoseconds stays as it is.
    let mut old = file(0o644, Content::bytes(b"old".to_vec()));
    old.meta.mtime = 86_400;
    old.meta.mtime_nsec = 123_456_789;
    ins(&mut t, "files/old", old);
    t
}

/// Holes (SEEK_HOLE/SEEK_DATA) of a file.
fn holes(f: &File) -> Vec<(u64, u64)> {
    use std::os::unix::io::AsRawFd;
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an open fd.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_HOLE) };
        if hole < 0 || hole as u64 >= len {
            break;
        }
        // SAFETY: as above.
        let data = unsafe { libc::lseek(f.as_raw_fd(), hole, libc::SEEK_DATA) };
        let end = if data < 0 { len } else { data as u64 };
        out.push((hole as u64, end));
        pos = end as i64;
    }
    out
}

/// Write 0xA5 into every hole of the image, as a used disk would show.
fn fill_holes(path: &Path) {
    let f = File::options().read(true).write(true).open(path).unwrap();
    let junk = vec![0xA5u8; 1 << 20];
    for (s, e) in holes(&f) {
        let mut o = s;
        while o < e {
            let n = (e - o).min(junk.len() as u64) as usize;
            f.write_all_at(&junk[..n], o).unwrap();
            o += n as u64;
        }
    }
    f.sync_all().unwrap();
}

/// Metadata block ranges that `dumpe2fs` reports (superblocks, GDT and
/// reserved GDT copies, bitmaps, inode tables), inclusive.
fn metadata_ranges(img: &Path) -> Vec<(u64, u64)> {
    let out = Command::new("dumpe2fs").arg(img).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        for part in line.split(',') {
            let part = part.trim();
            let Some(at) = part.find(" at ") else { continue };
            let what = &part[..at];
            if !(what.contains("superblock")
                || what.contains("Group descriptors")
                || what.contains("Reserved GDT")
                || what.contains("bitmap")
                || what.contains("Inode table"))
            {
                continue;
            }
            let nums = part[at + 4..].split_whitespace().next().unwrap();
            let (a, b) = nums.split_once('-').unwrap_or((nums, nums));
            v.push((a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    v
}

/// Every metadata block is written: none lies in a hole of the image.
fn assert_metadata_written(img: &Path) {
    let f = File::open(img).unwrap();
    let hs = holes(&f);
    let meta = metadata_ranges(img);
    assert!(meta.len() > 4, "dumpe2fs output not understood");
    for (a, b) in meta {
        let (s, e) = (a * 4096, (b + 1) * 4096);
        for &(hs_, he) in &hs {
            assert!(e <= hs_ || s >= he, "metadata blocks {a}-{b} lie in a hole {hs_}..{he}");
        }
    }
}

struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount").args(["-o", "loop,ro"]).arg(img).arg(at).status().unwrap();
        assert!(st.success(), "mount -o loop,ro {} failed", img.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Extended attributes as the kernel shows them (the builder's own reader).
fn lxattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    build_image::tree::dir::read_xattrs(p).unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display()))
}

/// Compare everything the kernel shows under `mnt` with the tree.
fn compare(tree: &Tree, mnt: &Path) -> usize {
    let mut ino_of: HashMap<InodeId, u64> = HashMap::new();
    let mut id_of: HashMap<u64, InodeId> = HashMap::new();
    let mut n = 0;
    tree.walk(|v| {
        let p = mnt.join(std::ffi::OsStr::from_bytes(v.path));
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let node = tree.inode(v.ino);
        let show = p.display();
        assert_eq!(md.mode(), node.st_mode(), "{show}: mode");
        assert_eq!((md.uid(), md.gid()), (node.meta.uid, node.meta.gid), "{show}: owner");
        if v.depth > 0 {
            assert_eq!((md.mtime(), md.mtime_nsec() as u32), (node.meta.mtime, node.meta.mtime_nsec), "{show}: mtime");
        }
        // Hardlinks: one tree inode ⇔ one kernel inode.
        let prev = ino_of.insert(v.ino, md.ino());
        assert!(prev.is_none() || prev == Some(md.ino()), "{show}: hardlink split");
        let prev = id_of.insert(md.ino(), v.ino);
        assert!(prev.is_none() || prev == Some(v.ino), "{show}: two tree inodes share a kernel inode");
        match &node.kind {
            Kind::File(c) => {
                assert_eq!(md.len(), c.len(), "{show}: size");
                let r = c.open().unwrap();
                let f = File::open(&p).unwrap();
                let mut off = 0;
                let mut a = vec![0u8; 1 << 20];
                let mut b = vec![0u8; 1 << 20];
                while off < c.len() {
                    let k = (c.len() - off).min(a.len() as u64) as usize;
                    r.read_exact_at(&mut a[..k], off).unwrap();
                    f.read_exact_at(&mut b[..k], off).unwrap();
                    assert!(a[..k] == b[..k], "{show}: content differs near offset {off}");
                    off += k as u64;
                }
                // Holes stay holes: allocated bytes no more than the data.
                let data: u64 = c.data_ranges().iter().map(|r| r.end.div_ceil(4096) * 4096 - r.start / 4096 * 4096).sum();
                // (plus extent-tree blocks: one per 340 extents at most)
                let slack = 4096 * (2 + c.data_ranges().len() as u64 / 300);
                assert!(md.blocks() * 512 <= data + slack, "{show}: {} bytes allocated for {data} of data", md.blocks() * 512);
            }
            Kind::Symlink(t) => {
                assert_eq!(std::fs::read_link(&p).unwrap().as_os_str().as_bytes(), &t[..], "{show}: target");
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                assert_eq!((libc::major(md.rdev()), libc::minor(md.rdev())), (*major, *minor), "{show}: rdev");
            }
            Kind::Dir(children) => {
                let mut names: Vec<Vec<u8>> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
                names.retain(|n| !(v.depth == 0 && n == b"lost+found"));
                names.sort();
                let want: Vec<Vec<u8>> = children.keys().cloned().collect();
                assert_eq!(names, want, "{show}: entries");
            }
            Kind::Fifo | Kind::Socket => {}
        }
        assert_eq!(lxattrs(&p), node.meta.xattrs, "{show}: xattrs");
        n += 1;
    });
    n
}

#[test]
fn awkward_tree_fsck_readback_dd_resize() {
    let d = tempfile::tempdir().unwrap();
    let tree = awkward_tree(d.path());
    let size = 128u64 << 20;
    let img = d.path().join("a.img");
    let report = build_at(&tree, &img, size).unwrap();
    assert!(report.used_bytes > 6 << 20);
    fsck(&img);
    let out = Command::new("debugfs").arg("-R").arg("htree_dump /wide").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Indirect levels: 1"), "/wide should have a two-level htree");
    if let Ok(keep) = std::env::var("EXT4_KEEP") {
        std::fs::copy(&img, keep).unwrap();
    }

    // Bit-identical when built again.
    let img2 = d.path().join("b.img");
    build_at(&tree, &img2, size).unwrap();
    assert_eq!(sha256(&img), sha256(&img2), "two builds differ");

    // The kernel reads back every entry.
    if is_root() {
        let m = Mount::new(&img, &d.path().join("mnt"));
        let n = compare(&tree, &m.0);
        assert!(n > 5000);
        drop(m);
    } else {
        eprintln!("not root: skipping the loop-mount read-back");
    }

    // dd-safety: all metadata written, and junk in every hole changes nothing.
    assert_metadata_written(&img2);
    fill_holes(&img2);
    fsck(&img2);
    if is_root() {
        let m = Mount::new(&img2, &d.path().join("mnt2"));
        compare(&tree, &m.0);
        drop(m);
    }

    // resize2fs can grow it.
    let f = File::options().write(true).open(&img).unwrap();
    f.set_len(size * 2).unwrap();
    drop(f);
    let out = Command::new("resize2fs").arg(&img).arg(format!("{}K", size * 2 / 1024)).output().unwrap();
    assert!(out.status.success(), "resize2fs: {}", String::from_utf8_lossy(&out.stderr));
    fsck(&img);
}

#[test]
fn empty_tree_and_too_small() {
    let d = tempfile::tempdir().unwrap();
    let tree = Tree::new(EPOCH);
    let img = d.path().join("e.img");
    build_at(&tree, &img, 16 << 20).unwrap();
    fsck(&img);
    for size in [300u64 << 20, (1 << 30) + 12345] {
        build_at(&tree, &img, size).unwrap();
        assert_metadata_written(&img);
        fsck(&img);
    }

    let tree = awkward_tree(d.path());
    let e = build_at(&tree, &img, 4 << 20).unwrap_err();
    let ext4::Ext4Error::TooSmall { needed, .. } = e else { panic!("expected TooSmall, got {e}") };
    let msg = e.to_string();
    assert!(msg.contains(&needed.to_string()), "{msg}");
    let min = ext4::min_size(&tree, &params(), &Ext4Options::default());
    assert_eq!(min, needed);
    build_at(&tree, &img, min).unwrap();
    fsck(&img);
    assert!(build_at(&tree, &img, min - 4096).is_err());
}

#[test]
fn debootstrap_minbase_if_present() {
    let src_buf = common::minbase();
    let src = src_buf.as_path();
    if !src.is_dir() {
        eprintln!("NOTICE: {} is absent; skipping the debootstrap tree", src.display());
        return;
    }
    let mut tree = Tree::new(EPOCH);
    let layer: build_image::recipe::layer::DirLayer =
        serde_json::from_value(serde_json::json!({"dir": src, "to": "/", "owner": "preserve"})).unwrap();
    build_image::tree::dir::apply(&mut tree, &layer, src).unwrap();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("m.img");
    let size = ext4::min_size(&tree, &params(), &Ext4Options::default()) * 5 / 4;
    let t0 = std::time::Instant::now();
    build_at(&tree, &img, size).unwrap();
    eprintln!("minbase: {} MiB image written in {:?}", size >> 20, t0.elapsed());
    fsck(&img);
    if is_root() {
        let m = Mount::new(&img, &d.path().join("mnt"));
        compare(&tree, &m.0);
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {} {name}: {}", p.display(), std::io::Error::last_os_error());
}

fn remove_xattr(p: &Path, name: &str) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(r, 0, "removexattr {} {name}: {}", p.display(), std::io::Error::last_os_error());
}

/// The kernel can modify what we wrote (htree inserts and deletes, extent
/// trees, xattr blocks, link counts, the journal) and the result is clean.
#[test]
fn kernel_writes_then_fsck() {
    if !is_root() {
        eprintln!("not root: skipping the read-write mount test");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = awkward_tree(d.path());
    let img = d.path().join("rw.img");
    build_at(&tree, &img, 400 << 20).unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt).status().unwrap();
    assert!(st.success());
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let guard = Umount(&mnt);
    for i in 0..3000 {
        std::fs::write(mnt.join(format!("big/new-{i}-{}", "q".repeat(i % 50))), format!("{i}")).unwrap();
    }
    let mut removed = 0;
    for e in std::fs::read_dir(mnt.join("big")).unwrap() {
        let e = e.unwrap();
        if removed < 1000 && e.file_type().unwrap().is_file() && e.file_name().as_bytes().starts_with(b"entry-") {
            std::fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    for i in (0..10000).step_by(3) {
        std::fs::remove_file(mnt.join(format!("wide/{i:06}{}", "w".repeat(234)))).unwrap();
    }
    for i in 0..2000 {
        std::fs::write(mnt.join(format!("wide/new{i:06}{}", "v".repeat(200))), b"").unwrap();
    }
    let large = File::options().append(true).open(mnt.join("files/large")).unwrap();
    std::io::Write::write_all(&mut &large, &vec![9u8; 1 << 20]).unwrap();
    let sparse = File::options().write(true).open(mnt.join("files/sparse")).unwrap();
    sparse.write_all_at(b"into the hole", 30 << 20).unwrap();
    let islands = File::options().write(true).open(mnt.join("files/islands")).unwrap();
    islands.write_all_at(&vec![1u8; 3 * 4096 * 100], 3 * 4096 * 700).unwrap();
    set_xattr(&mnt.join("xattr/large"), "user.added", b"new value");
    remove_xattr(&mnt.join("xattr/large"), "trusted.big");
    set_xattr(&mnt.join("xattr/small"), "user.small", b"changed in the inode");
    std::fs::remove_file(mnt.join("hard/a")).unwrap();
    std::fs::rename(mnt.join("hard/b"), mnt.join("modes/sticky/b")).unwrap();
    for i in 0..50 {
        std::fs::create_dir(mnt.join(format!("dir{i}"))).unwrap();
    }
    std::fs::remove_file(mnt.join("links/slow")).unwrap();
    drop((large, sparse, islands));
    drop(guard);
    fsck(&img);
}

/// xorshift64*: a tiny deterministic generator for random trees.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn random_tree(seed: u64) -> Tree {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut t = Tree::new(EPOCH);
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    for _ in 0..400 {
        let parent = dirs[r.below(dirs.len() as u64) as usize].clone();
        let len = match r.below(4) {
            0 => 255,
            _ => 1 + r.below(40) as usize,
        };
        let mut name: Vec<u8> = r.bytes(len).into_iter().map(|b| if b == b'/' || b == 0 { b'_' } else { b }).collect();
        if name == b"." || name == b".." || (parent.is_empty() && name == b"lost+found") {
            name.push(b'x');
        }
        name.truncate(255);
        let mut path = parent.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if t.find(&path).is_some() {
            continue;
        }
        let mut meta = Meta::new(r.below(0o10000) as u32, EPOCH);
        meta.uid = if r.below(2) == 0 { r.below(70000) as u32 } else { r.next() as u32 };
        meta.gid = r.below(1 << 20) as u32;
        meta.mtime = EPOCH - r.below(1 << 30) as i64;
        meta.mtime_nsec = r.below(1_000_000_000) as u32;
        for _ in 0..r.below(6) {
            let ns = ["user.", "trusted.", "security."][r.below(3) as usize];
            let n = format!("{ns}k{}", r.below(1000));
            let vlen = r.below(300) as usize;
            meta.xattrs.insert(n.into_bytes(), r.bytes(vlen));
        }
        let kind = match r.below(12) {
            0..=2 => Kind::Dir(BTreeMap::new()),
            3..=6 => {
                let n = match r.below(4) {
                    0 => 0,
                    1 => 4096 * (1 + r.below(4)) as usize,
                    _ => r.below(30000) as usize,
                };
                Kind::File(Content::bytes(r.bytes(n)))
            }
            7 => {
                let n = 1 + r.below(300) as usize;
                Kind::Symlink(r.bytes(n).into_iter().map(|b| if b == 0 { b'z' } else { b }).collect())
            }
            8 => Kind::CharDev { major: r.below(4096) as u32, minor: r.below(1 << 20) as u32 },
            9 => Kind::BlockDev { major: r.below(300) as u32, minor: r.below(300) as u32 },
            10 => Kind::Fifo,
            _ => {
                if let Some(f) = files.get(r.below(files.len().max(1) as u64) as usize).cloned() {
                    t.hardlink(&path, &f).unwrap();
                    continue;
                }
                Kind::Socket
            }
        };
        // The kernel hides user.* on anything but files and directories.
        if !matches!(kind, Kind::File(_) | Kind::Dir(_)) {
            meta.xattrs.retain(|k, _| !k.starts_with(b"user."));
        }
        let is_dir = matches!(kind, Kind::Dir(_));
        let is_file = matches!(kind, Kind::File(_));
        let id = t.add_inode(Inode { meta, kind });
        t.link_inode(&path, id).unwrap();
        if is_dir {
            dirs.push(path);
        } else if is_file {
            files.push(path);
        }
    }
    t
}

/// Random trees, each written at exactly `min_size`: clean and exact.
#[test]
fn random_trees_at_min_size() {
    let d = tempfile::tempdir().unwrap();
    let n: u64 = std::env::var("EXT4_RANDOM_TREES").map(|s| s.parse().unwrap()).unwrap_or(6);
    for seed in 1..=n {
        let tree = random_tree(seed);
        let size = ext4::min_size(&tree, &params(), &Ext4Options::default());
        let img = d.path().join(format!("r{seed}.img"));
        build_at(&tree, &img, size).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        fsck(&img);
        if is_root() {
            let m = Mount::new(&img, &d.path().join(format!("m{seed}")));
            compare(&tree, &m.0);
        }
    }
}
