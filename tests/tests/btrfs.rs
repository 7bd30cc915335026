//! The btrfs writer against real oracles: `btrfs check` and the kernel.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use build_image::disk::region::Region;
use build_image::fs::btrfs::{self, BtrfsOptions, Compression, SubvolumeSpec};
use build_image::fs::FsParams;
use build_image::tree::{Content, Inode, Kind, Meta, Tree};

const EPOCH: i64 = 1_700_000_000;

fn params() -> FsParams {
    FsParams {
        label: "test-btrfs".into(),
        uuid: uuid::Uuid::from_bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x47, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01]),
        seed: [7u8; 32],
        epoch: EPOCH,
    }
}

fn have_btrfs() -> bool {
    Command::new("btrfs").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Write `tree` into a fresh sparse image of `size` bytes (default: the
/// writer's minimum plus 64 MiB).
fn image(dir: &Path, name: &str, tree: &Tree, opts: &BtrfsOptions, size: Option<u64>) -> PathBuf {
    let p = dir.join(name);
    let f = File::options().read(true).write(true).create_new(true).open(&p).unwrap();
    let size = size.unwrap_or_else(|| btrfs::min_size(tree, &params(), opts) + (64 << 20));
    f.set_len(size).unwrap();
    let r = Region::new(&f, 0, size, "test");
    btrfs::write(tree, r, &params(), opts).unwrap();
    p
}

fn check(img: &Path) {
    if !have_btrfs() {
        eprintln!("SKIP: btrfs-progs not installed; `btrfs check` not run on {}", img.display());
        return;
    }
    // Both checkers: the original one and lowmem, which walks the trees
    // by different code.
    for mode in ["--mode=original", "--mode=lowmem"] {
        let o = Command::new("btrfs").args(["check", "--readonly", "--check-data-csum", mode]).arg(img).output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let bad = out
            .lines()
            .any(|l| l.contains("ERROR") || l.contains("WARNING") || (l.to_lowercase().contains("error") && !l.contains("no error found")));
        assert!(o.status.success() && !bad, "btrfs check {mode} failed on {}:\n{out}", img.display());
    }
    // The first mirror superblock, where the image has room for it.
    if fs::metadata(img).unwrap().len() >= (64 << 20) + 4096 {
        let o = Command::new("btrfs").args(["check", "--readonly", "-s", "1"]).arg(img).output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && out.contains("no error found"), "btrfs check -s 1 failed on {}:\n{out}", img.display());
    }
}

fn meta(mode: u32) -> Meta {
    Meta::new(mode, EPOCH)
}

fn file(tree: &mut Tree, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
    tree.insert(path.as_bytes(), Inode { meta: meta(mode), kind: Kind::File(Content::bytes(data)) }).unwrap();
}

fn pseudo(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A tree with the awkward cases. `host` holds the sparse host file.
fn awkward(host: &Path) -> Tree {
    let mut t = Tree::new(EPOCH);
    file(&mut t, "/setuid", 0o4755, vec![b'x'; 100]);
    t.insert(b"/setgid", Inode { meta: meta(0o2775), kind: Kind::Dir(Default::default()) }).unwrap();
    t.insert(b"/tmp", Inode { meta: meta(0o1777), kind: Kind::Dir(Default::default()) }).unwrap();
    let mut m = meta(0o640);
    m.uid = 70_000;
    m.gid = 80_001;
    m.mtime = EPOCH - 1000;
    m.mtime_nsec = 123_456_789;
    t.insert(b"/setgid/owned", Inode { meta: m, kind: Kind::File(Content::bytes(b"owned by a big uid\n".to_vec())) }).unwrap();
    t.insert(b"/links/short", Inode { meta: meta(0o777), kind: Kind::Symlink(b"a".to_vec()) }).unwrap();
    let long: Vec<u8> = std::iter::repeat_n(b"abcdefghi/".as_slice(), 400).flatten().copied().collect();
    t.insert(b"/links/long", Inode { meta: meta(0o777), kind: Kind::Symlink(long) }).unwrap();
    file(&mut t, "/h/a", 0o644, b"hardlinked content\n".to_vec());
    t.hardlink(b"/h/b", b"/h/a").unwrap();
    t.hardlink(b"/other/c", b"/h/a").unwrap();
    file(&mut t, "/h/big1", 0o644, pseudo(70_000, 9));
    t.hardlink(b"/h/big2", b"/h/big1").unwrap();
    t.insert(b"/fifo", Inode { meta: meta(0o600), kind: Kind::Fifo }).unwrap();
    t.insert(b"/sock", Inode { meta: meta(0o755), kind: Kind::Socket }).unwrap();
    t.insert(b"/dev/null", Inode { meta: meta(0o666), kind: Kind::CharDev { major: 1, minor: 3 } }).unwrap();
    t.insert(b"/dev/sda1", Inode { meta: meta(0o660), kind: Kind::BlockDev { major: 8, minor: 1 } }).unwrap();
    t.insert(b"/dev/odd", Inode { meta: meta(0o600), kind: Kind::CharDev { major: 300, minor: 70_000 } }).unwrap();
    let mut m = meta(0o755);
    m.xattrs.insert(b"user.comment".to_vec(), b"hello xattr".to_vec());
    m.xattrs.insert(b"trusted.big".to_vec(), vec![0x5a; 3000]);
    // vfs_cap_data revision 2: cap_net_bind_service permitted + effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&[0; 8]);
    m.xattrs.insert(b"security.capability".to_vec(), cap);
    t.insert(b"/bin/ping", Inode { meta: m, kind: Kind::File(Content::bytes(pseudo(5000, 3))) }).unwrap();
    let mut m = meta(0o755);
    m.xattrs.insert(b"user.dir".to_vec(), b"on a directory".to_vec());
    t.insert(b"/xdir", Inode { meta: m, kind: Kind::Dir(Default::default()) }).unwrap();
    let name: String = "é".repeat(127) + "a";
    assert_eq!(name.len(), 255);
    file(&mut t, &format!("/names/{name}"), 0o644, b"long name".to_vec());
    file(&mut t, "/names/日本語のファイル名", 0o644, b"utf8".to_vec());
    for i in 0..5000 {
        file(&mut t, &format!("/many/entry-{i:05}"), 0o644, if i % 7 == 0 { format!("{i}\n").into_bytes() } else { Vec::new() });
    }
    file(&mut t, "/empty", 0o644, Vec::new());
    file(&mut t, "/inline-max", 0o644, pseudo(2048, 1));
    file(&mut t, "/just-over", 0o644, pseudo(2049, 2));
    file(&mut t, "/one-sector", 0o644, pseudo(4096, 4));
    file(&mut t, "/multi-mib", 0o644, pseudo((3 << 20) + 123, 5));
    let mut compressible = Vec::new();
    for i in 0..40_000 {
        compressible.extend_from_slice(format!("line {i} of a very compressible text file\n").as_bytes());
    }
    file(&mut t, "/text", 0o644, compressible);
    // Sparse host file: data at 0, 5 MiB and at the end of 10 MiB.
    let f = File::create(host).unwrap();
    f.set_len(10 << 20).unwrap();
    f.write_all_at(&pseudo(8192, 6), 0).unwrap();
    f.write_all_at(&pseudo(100_000, 7), 5 << 20).unwrap();
    f.write_all_at(b"tail", (10 << 20) - 4).unwrap();
    drop(f);
    let c = Content::host(host).unwrap();
    t.insert(b"/sparse", Inode { meta: meta(0o644), kind: Kind::File(c) }).unwrap();
    // An all-hole file.
    let hole = host.with_extension("hole");
    File::create(&hole).unwrap().set_len(3 << 20).unwrap();
    t.insert(b"/all-hole", Inode { meta: meta(0o644), kind: Kind::File(Content::host(&hole).unwrap()) }).unwrap();
    t
}

struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(img: &Path, opts: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount").args(["-t", "btrfs", "-o", &format!("loop,{opts}")]).arg(img).arg(dir.path()).output().unwrap();
        assert!(o.status.success(), "mount -o {opts} failed: {}", String::from_utf8_lossy(&o.stderr));
        Mount { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Extended attributes as the kernel shows them (the builder's own reader).
fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    build_image::tree::dir::read_xattrs(p).unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display()))
}

/// Compare everything reachable from `from` in the tree with the mounted
/// directory; `skip` are directories shown empty (subvolume mount points).
fn compare(tree: &Tree, from: &str, mnt: &Path, skip: &[&str]) -> usize {
    let start = tree.find(from.as_bytes()).unwrap();
    let prefix = build_image::tree::components(from.as_bytes()).unwrap().join(&b'/');
    let mut seen: HashMap<usize, u64> = HashMap::new();
    let mut inos: HashMap<u64, usize> = HashMap::new();
    let mut n = 0;
    tree.walk(|v| {
        let rel: &[u8] = if prefix.is_empty() {
            v.path
        } else if v.path == prefix.as_slice() {
            b""
        } else if v.path.starts_with(&prefix) && v.path.get(prefix.len()) == Some(&b'/') {
            &v.path[prefix.len() + 1..]
        } else {
            return;
        };
        let rel_s = String::from_utf8_lossy(rel).to_string();
        if skip.iter().any(|s| rel_s.starts_with(&format!("{s}/"))) {
            return;
        }
        let _ = start;
        let p = mnt.join(std::ffi::OsStr::from_bytes(rel));
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let node = tree.inode(v.ino);
        assert_eq!(md.mode(), node.st_mode(), "mode of {rel_s}");
        assert_eq!((md.uid(), md.gid()), (node.meta.uid, node.meta.gid), "owner of {rel_s}");
        if !rel.is_empty() {
            assert_eq!((md.mtime(), md.mtime_nsec() as u32), (node.meta.mtime, node.meta.mtime_nsec), "mtime of {rel_s}");
        }
        assert_eq!(xattrs(&p), node.meta.xattrs, "xattrs of {rel_s}");
        match &node.kind {
            Kind::File(c) => {
                assert_eq!(md.len(), c.len(), "size of {rel_s}");
                let got = fs::read(&p).unwrap();
                let r = c.open().unwrap();
                let mut want = vec![0u8; c.len() as usize];
                r.read_exact_at(&mut want, 0).unwrap();
                assert!(got == want, "content of {rel_s}");
            }
            Kind::Symlink(t) => assert_eq!(fs::read_link(&p).unwrap().as_os_str().as_bytes(), t.as_slice(), "target of {rel_s}"),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                assert_eq!((libc::major(md.rdev()), libc::minor(md.rdev())), (*major, *minor), "rdev of {rel_s}")
            }
            Kind::Dir(children) => {
                if skip.contains(&rel_s.as_str()) {
                    assert_eq!(fs::read_dir(&p).unwrap().count(), 0, "{rel_s} should be an empty mount point");
                } else {
                    assert_eq!(fs::read_dir(&p).unwrap().count(), children.len(), "entries of {rel_s}");
                }
            }
            _ => {}
        }
        if !matches!(node.kind, Kind::Dir(_)) {
            if let Some(&ino) = seen.get(&v.ino) {
                assert_eq!(md.ino(), ino, "hardlink {rel_s}");
            } else {
                assert!(inos.insert(md.ino(), v.ino).is_none(), "{rel_s} shares an inode it should not");
                seen.insert(v.ino, md.ino());
            }
            assert_eq!(md.nlink() as usize, count_names(tree, v.ino, &prefix), "nlink of {rel_s}");
        }
        n += 1;
    });
    n
}

fn count_names(tree: &Tree, ino: usize, _prefix: &[u8]) -> usize {
    let mut n = 0;
    tree.walk(|v| {
        if v.ino == ino {
            n += 1;
        }
    });
    n
}

#[test]
fn empty_tree_passes_check() {
    let d = tempfile::tempdir().unwrap();
    let t = Tree::new(EPOCH);
    let img = image(d.path(), "empty.img", &t, &BtrfsOptions::default(), None);
    check(&img);
}

#[test]
fn awkward_tree_passes_check_and_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    let img = image(d.path(), "awkward.img", &t, &BtrfsOptions::default(), None);
    check(&img);
    if !is_root() {
        eprintln!("SKIP: not root; kernel read-back not run");
        return;
    }
    let m = Mount::new(&img, "ro");
    let n = compare(&t, "/", m.path(), &[]);
    assert!(n > 5000);
    // The kernel verifies every data checksum and both metadata copies.
    let o = Command::new("btrfs").args(["scrub", "start", "-B", "-r"]).arg(m.path()).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && out.contains("no errors found"), "scrub: {out}");
}

fn opts_with(f: impl FnOnce(&mut BtrfsOptions)) -> BtrfsOptions {
    let mut o = BtrfsOptions::default();
    f(&mut o);
    o
}

fn compressed(kind: Compression, name: &str) {
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    let opts = opts_with(|o| o.compression = Some(kind));
    let img = image(d.path(), name, &t, &opts, None);
    check(&img);
    let plain = image(d.path(), "plain.img", &t, &BtrfsOptions::default(), None);
    let used = |p: &Path| {
        let o = Command::new("btrfs").args(["inspect-internal", "dump-super"]).arg(p).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        let l = s.lines().find(|l| l.starts_with("bytes_used")).unwrap().to_string();
        l.split_whitespace().last().unwrap().parse::<u64>().unwrap()
    };
    if have_btrfs() {
        assert!(used(&img) < used(&plain), "compression should save space");
    }
    if !is_root() {
        eprintln!("SKIP: not root; kernel read-back not run");
        return;
    }
    let m = Mount::new(&img, "ro");
    compare(&t, "/", m.path(), &[]);
}

#[test]
fn zstd_compressed_passes_check_and_reads_back() {
    compressed(Compression::Zstd, "zstd.img");
}

#[test]
fn zlib_compressed_passes_check_and_reads_back() {
    compressed(Compression::Zlib, "zlib.img");
}

fn subvol_opts() -> BtrfsOptions {
    opts_with(|o| {
        o.subvolumes =
            vec![SubvolumeSpec { name: "@".into(), from: "/".into() }, SubvolumeSpec { name: "@home".into(), from: "/home".into() }];
        o.default_subvolume = Some("@".into());
    })
}

#[test]
fn subvolumes_pass_check_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let mut t = awkward(&d.path().join("sparse.host"));
    let mut m = meta(0o750);
    m.uid = 1000;
    t.insert(b"/home", Inode { meta: meta(0o755), kind: Kind::Dir(Default::default()) }).unwrap();
    t.insert(b"/home/user", Inode { meta: m, kind: Kind::Dir(Default::default()) }).unwrap();
    file(&mut t, "/home/user/notes.txt", 0o600, pseudo(10_000, 11));
    file(&mut t, "/home/user/small", 0o600, b"small".to_vec());
    file(&mut t, "/home/user/.cache/deep/x", 0o600, pseudo(3000, 12));
    let mut opts = subvol_opts();
    // A subvolume inside another's part of the tree: `@home` keeps an empty
    // `user/.cache` where `@cache` is meant to be mounted.
    opts.subvolumes.push(SubvolumeSpec { name: "@cache".into(), from: "/home/user/.cache".into() });
    let img = image(d.path(), "subvol.img", &t, &opts, None);
    check(&img);
    if have_btrfs() && is_root() {
        let m = Mount::new(&img, "ro");
        // The default subvolume is `@`: the root of the tree, /home empty.
        compare(&t, "/", m.path(), &["home"]);
        drop(m);
        let m = Mount::new(&img, "ro,subvol=@home");
        compare(&t, "/home", m.path(), &["user/.cache"]);
        drop(m);
        let m = Mount::new(&img, "ro,subvol=@cache");
        compare(&t, "/home/user/.cache", m.path(), &[]);
        drop(m);
        let m = Mount::new(&img, "ro,subvolid=5");
        let mut names: Vec<String> = fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, vec!["@", "@cache", "@home"]);
        let o = Command::new("btrfs").args(["subvolume", "list"]).arg(m.path()).output().unwrap();
        let list = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(list.contains("ID 256 gen 1 top level 5 path @\n"), "{list}");
        assert!(list.contains("ID 257 gen 1 top level 5 path @home\n"), "{list}");
        let o = Command::new("btrfs").args(["subvolume", "get-default"]).arg(m.path()).output().unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("ID 256 "), "{}", String::from_utf8_lossy(&o.stdout));
    } else {
        eprintln!("SKIP: not root; kernel read-back not run");
    }
}

#[test]
fn two_builds_are_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    let a = image(d.path(), "a.img", &t, &subvol_opts_without_home(), Some(256 << 20));
    let b = image(d.path(), "b.img", &t, &subvol_opts_without_home(), Some(256 << 20));
    assert!(fs::read(a).unwrap() == fs::read(b).unwrap(), "two builds differ");
}

fn subvol_opts_without_home() -> BtrfsOptions {
    opts_with(|o| {
        o.subvolumes = vec![SubvolumeSpec { name: "@".into(), from: "/".into() }];
        o.default_subvolume = Some("@".into());
        o.compression = Some(Compression::Zstd);
    })
}

/// Fill every hole of `img` with 0xA5, as a disk full of old data would.
fn fill_holes(img: &Path) -> u64 {
    let f = File::options().read(true).write(true).open(img).unwrap();
    let len = f.metadata().unwrap().len();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut holes = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an open fd.
        let h = unsafe { libc::lseek(fd, pos, libc::SEEK_HOLE) };
        if h < 0 || h as u64 >= len {
            break;
        }
        // SAFETY: as above.
        let dnext = unsafe { libc::lseek(fd, h, libc::SEEK_DATA) };
        let end = if dnext < 0 { len } else { dnext as u64 };
        holes.push((h as u64, end));
        pos = end as i64;
    }
    let junk = vec![0xA5u8; 1 << 20];
    let mut filled = 0;
    for (s, e) in holes {
        let mut o = s;
        while o < e {
            let n = (e - o).min(junk.len() as u64);
            f.write_all_at(&junk[..n as usize], o).unwrap();
            o += n;
            filled += n;
        }
    }
    filled
}

#[test]
fn junk_in_the_holes_does_not_matter() {
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    for (name, opts, size) in [("dd.img", BtrfsOptions::default(), 300u64 << 20), ("dd-subvol.img", subvol_opts_without_home(), 100 << 20)]
    {
        let img = image(d.path(), name, &t, &opts, Some(size));
        let filled = fill_holes(&img);
        assert!(filled > 0);
        check(&img);
        if is_root() && have_btrfs() {
            let m = Mount::new(&img, "ro");
            // Plain and with `@` as the default subvolume: the same tree.
            compare(&t, "/", m.path(), &[]);
            drop(m);
            // Read-write on top of the junk: new blocks land in free space.
            {
                let m = Mount::new(&img, "rw");
                fs::write(m.path().join("after-junk"), pseudo(3 << 20, 8)).unwrap();
                for i in 0..300 {
                    fs::write(m.path().join(format!("many/entry-{i:05}")), pseudo(i * 50, i as u32)).unwrap();
                }
            }
            check(&img);
            let m = Mount::new(&img, "ro");
            assert_eq!(fs::read(m.path().join("after-junk")).unwrap(), pseudo(3 << 20, 8));
        }
    }
}

#[test]
fn read_write_mount_then_check() {
    if !is_root() || !have_btrfs() {
        eprintln!("SKIP: needs root and btrfs-progs");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut t = awkward(&d.path().join("sparse.host"));
    file(&mut t, "/home/user/file", 0o644, pseudo(100_000, 5));
    let img = image(d.path(), "rw.img", &t, &subvol_opts(), Some(512 << 20));
    {
        let m = Mount::new(&img, "rw");
        let p = m.path();
        fs::write(p.join("new-file"), pseudo(5 << 20, 99)).unwrap();
        fs::remove_file(p.join("multi-mib")).unwrap();
        fs::remove_dir_all(p.join("many")).unwrap();
        fs::write(p.join("h/b"), b"rewritten through a hardlink").unwrap();
        fs::create_dir(p.join("newdir")).unwrap();
        for i in 0..200 {
            fs::write(p.join(format!("newdir/{i}")), pseudo(i * 100, i as u32)).unwrap();
        }
        let o = Command::new("btrfs").args(["subvolume", "create"]).arg(p.join("newsub")).output().unwrap();
        assert!(o.status.success());
        let o = Command::new("sync").status().unwrap();
        assert!(o.success());
    }
    check(&img);
    let m = Mount::new(&img, "ro");
    assert_eq!(fs::read(m.path().join("new-file")).unwrap(), pseudo(5 << 20, 99));
    assert_eq!(fs::read(m.path().join("h/a")).unwrap(), b"rewritten through a hardlink");
}

#[test]
fn too_small_region_says_how_much_is_needed() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(EPOCH);
    file(&mut t, "/big", 0o644, pseudo(20 << 20, 1));
    let need = btrfs::min_size(&t, &params(), &BtrfsOptions::default());
    let p = d.path().join("small.img");
    let f = File::create(&p).unwrap();
    f.set_len(need - 4096).unwrap();
    let err = btrfs::write(&t, Region::new(&f, 0, need - 4096, "test"), &params(), &BtrfsOptions::default()).unwrap_err();
    assert!(err.to_string().contains(&need.to_string()), "{err}");
    // Exactly the minimum works.
    drop(f);
    let img = image(d.path(), "exact.img", &t, &BtrfsOptions::default(), Some(need));
    check(&img);
    // Even a filesystem of exactly the minimum size takes small changes.
    if is_root() && have_btrfs() {
        {
            // The data chunk is full: free some data first.
            let m = Mount::new(&img, "rw");
            fs::remove_file(m.path().join("big")).unwrap();
            assert!(Command::new("sync").arg("-f").arg(m.path()).status().unwrap().success());
            fs::write(m.path().join("note"), b"small change").unwrap();
            fs::create_dir(m.path().join("dir")).unwrap();
            fs::write(m.path().join("dir/after"), pseudo(1 << 20, 3)).unwrap();
        }
        check(&img);
    }
}

#[test]
fn minbase_tree_if_present() {
    let host = Path::new("/work/cache/minbase");
    if !host.is_dir() {
        eprintln!("SKIP: /work/cache/minbase not present");
        return;
    }
    let mut t = Tree::new(EPOCH);
    let layer: build_image::recipe::layer::DirLayer =
        serde_json::from_value(serde_json::json!({"dir": host.to_str().unwrap(), "owner": "preserve"})).unwrap();
    build_image::tree::dir::apply(&mut t, &layer, host).unwrap();
    let d = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let img = image(d.path(), "minbase.img", &t, &BtrfsOptions::default(), Some(1 << 30));
    eprintln!("minbase: written in {:?}", start.elapsed());
    check(&img);
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        compare(&t, "/", m.path(), &[]);
    }
    let img = image(d.path(), "minbase-zstd.img", &t, &opts_with(|o| o.compression = Some(Compression::Zstd)), Some(1 << 30));
    check(&img);
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        compare(&t, "/", m.path(), &[]);
    }
    let opts = opts_with(|o| {
        o.subvolumes =
            vec![SubvolumeSpec { name: "@".into(), from: "/".into() }, SubvolumeSpec { name: "@var".into(), from: "/var".into() }];
        o.default_subvolume = Some("@".into());
    });
    let img = image(d.path(), "minbase-subvol.img", &t, &opts, Some(1 << 30));
    check(&img);
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro,subvol=@var");
        compare(&t, "/var", m.path(), &[]);
    }
}

#[test]
fn subvolume_beside_a_top_level_tree() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(EPOCH);
    file(&mut t, "/etc/os-release", 0o644, b"ID=test\n".to_vec());
    file(&mut t, "/srv/data/blob", 0o644, pseudo(200_000, 1));
    file(&mut t, "/srv/data/x", 0o644, b"x".to_vec());
    let opts = opts_with(|o| o.subvolumes = vec![SubvolumeSpec { name: "@data".into(), from: "/srv/data".into() }]);
    let img = image(d.path(), "beside.img", &t, &opts, None);
    check(&img);
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        compare(&t, "/etc", &m.path().join("etc"), &[]);
        assert_eq!(fs::read_dir(m.path().join("srv/data")).unwrap().count(), 0);
        assert!(m.path().join("@data").is_dir());
        drop(m);
        let m = Mount::new(&img, "ro,subvol=@data");
        compare(&t, "/srv/data", m.path(), &[]);
    }
}

#[test]
fn file_over_128_mib_is_split_into_extents() {
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("big.host");
    let f = File::create(&host).unwrap();
    let chunk = pseudo(1 << 20, 42);
    for i in 0..130u64 {
        f.write_all_at(&chunk, i << 20).unwrap();
    }
    f.write_all_at(b"end", 130 << 20).unwrap();
    drop(f);
    let mut t = Tree::new(EPOCH);
    t.insert(b"/big", Inode { meta: meta(0o644), kind: Kind::File(Content::host(&host).unwrap()) }).unwrap();
    let img = image(d.path(), "big.img", &t, &BtrfsOptions::default(), None);
    check(&img);
    if have_btrfs() {
        let o = Command::new("btrfs").args(["inspect-internal", "dump-tree", "-t", "5"]).arg(&img).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        // Extents are capped at 128 MiB (and also end at data chunk ends).
        let sizes: Vec<u64> = s
            .lines()
            .filter(|l| l.contains("extent data disk byte"))
            .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
            .collect();
        assert!(sizes.len() >= 2 && sizes.iter().all(|&n| n <= 128 << 20), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), (130 << 20) + 4096);
    }
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        compare(&t, "/", m.path(), &[]);
    }
}

/// The DUP stripes (physical offset, length) of the metadata and system
/// chunks, from `dump-tree -t chunk`.
fn dup_stripes(img: &Path) -> Vec<(u64, u64)> {
    let o = Command::new("btrfs").args(["inspect-internal", "dump-tree", "-t", "chunk"]).arg(img).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    let mut out = Vec::new();
    let mut len = 0u64;
    let mut dup = false;
    for l in s.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"length") {
            len = w[1].parse().unwrap();
            dup = l.contains("DUP");
        }
        if dup && w.first() == Some(&"stripe") && w.get(1) == Some(&"0") {
            out.push((w[5].parse().unwrap(), len));
        }
    }
    out
}

#[test]
fn second_metadata_copy_is_complete() {
    if !is_root() || !have_btrfs() {
        eprintln!("SKIP: needs root and btrfs-progs");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    let img = image(d.path(), "dup.img", &t, &BtrfsOptions::default(), None);
    let stripes = dup_stripes(&img);
    assert_eq!(stripes.len(), 2, "system and metadata DUP chunks");
    // Destroy the first copy of every tree block; the kernel must read
    // everything from the second one.
    let f = File::options().write(true).open(&img).unwrap();
    for (off, len) in stripes {
        f.write_all_at(&vec![0xA5u8; len as usize], off).unwrap();
    }
    drop(f);
    let m = Mount::new(&img, "ro");
    compare(&t, "/", m.path(), &[]);
}

#[test]
fn many_hardlinks_in_one_directory_use_extrefs() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(EPOCH);
    file(&mut t, "/links/0", 0o644, b"one inode, many names".to_vec());
    for i in 1..400 {
        let name = format!("/links/{i}-{}", "n".repeat(150));
        t.hardlink(name.as_bytes(), b"/links/0").unwrap();
    }
    let img = image(d.path(), "extref.img", &t, &BtrfsOptions::default(), None);
    check(&img);
    if have_btrfs() {
        let o = Command::new("btrfs").args(["inspect-internal", "dump-tree", "-t", "5"]).arg(&img).output().unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("INODE_EXTREF"));
    }
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        compare(&t, "/", m.path(), &[]);
        let o = Command::new("btrfs").args(["scrub", "start", "-B", "-r"]).arg(m.path()).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && out.contains("no errors found"), "scrub: {out}");
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn name(&mut self) -> Vec<u8> {
        let len = match self.below(10) {
            0 => 200 + self.below(56) as usize,
            _ => 1 + self.below(20) as usize,
        };
        let mut n: Vec<u8> = (0..len).map(|_| (self.below(254) + 1) as u8).map(|b| if b == b'/' { b'_' } else { b }).collect();
        if n == b"." || n == b".." {
            n.push(b'x');
        }
        n
    }
}

/// A random tree: every kind of entry, random names (not always UTF-8),
/// modes, owners, times, xattrs and sizes.
fn random_tree(seed: u64) -> Tree {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut t = Tree::new(EPOCH);
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    for _ in 0..400 {
        let parent = dirs[r.below(dirs.len() as u64) as usize].clone();
        let mut path = parent.clone();
        path.push(b'/');
        path.extend(r.name());
        if t.find(&path).is_some() {
            continue;
        }
        let mut m = Meta::new(r.below(0o10000) as u32, EPOCH);
        m.uid = r.below(1 << 31) as u32;
        m.gid = r.below(1 << 31) as u32;
        m.mtime = EPOCH - r.below(1 << 30) as i64;
        m.mtime_nsec = r.below(1_000_000_000) as u32;
        let kind = match r.below(20) {
            0..=4 => Kind::Dir(Default::default()),
            5..=12 => {
                let len = match r.below(10) {
                    0 => 0,
                    1..=4 => r.below(2100) as usize,
                    5..=8 => r.below(300_000) as usize,
                    _ => r.below(3 << 20) as usize,
                };
                // Half random (incompressible), half repetitive.
                let data = if r.below(2) == 0 { r.bytes(len) } else { (0..len).map(|i| (i / 100) as u8).collect() };
                Kind::File(Content::bytes(data))
            }
            13..=14 => {
                let max = if r.below(4) == 0 { 4000 } else { 60 };
                let len = 1 + r.below(max) as usize;
                Kind::Symlink((0..len).map(|_| (r.below(254) + 1) as u8).collect())
            }
            15..=16 if !files.is_empty() => {
                let target = files[r.below(files.len() as u64) as usize].clone();
                t.hardlink(&path, &target).unwrap();
                continue;
            }
            17 => Kind::CharDev { major: r.below(4096) as u32, minor: r.below(1 << 20) as u32 },
            18 => Kind::BlockDev { major: r.below(4096) as u32, minor: r.below(1 << 20) as u32 },
            _ => Kind::Fifo,
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        let is_file = matches!(kind, Kind::File(_));
        for _ in 0..r.below(3) {
            // The kernel hides user.* xattrs of special files, so none are made.
            let ns = if r.below(2) == 0 && (is_dir || is_file) { "user." } else { "trusted." };
            let mut name = ns.as_bytes().to_vec();
            name.extend(format!("a{}", r.below(1000)).bytes());
            let len = r.below(600) as usize;
            m.xattrs.insert(name, r.bytes(len));
        }
        t.insert(&path, Inode { meta: m, kind }).unwrap();
        if is_dir {
            dirs.push(path);
        } else if is_file {
            files.push(path);
        }
    }
    t
}

#[test]
fn random_trees_pass_check_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    // More seeds: BTRFS_RANDOM_SEEDS=100.
    let n: u64 = std::env::var("BTRFS_RANDOM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    for seed in 1..=n {
        let t = random_tree(seed);
        let opts = opts_with(|o| {
            o.compression = [None, Some(Compression::Zstd), Some(Compression::Zlib)][seed as usize % 3];
        });
        let img = image(d.path(), &format!("random-{seed}.img"), &t, &opts, None);
        check(&img);
        if is_root() && have_btrfs() {
            let m = Mount::new(&img, "ro");
            compare(&t, "/", m.path(), &[]);
        }
        fs::remove_file(&img).unwrap();
    }
}

#[test]
fn hundred_thousand_entries_make_three_level_trees() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(EPOCH);
    for i in 0..100_000u32 {
        let data = if i % 10 == 0 { pseudo(100 + (i % 3000) as usize, i) } else { Vec::new() };
        file(&mut t, &format!("/d{:03}/file-with-a-longish-name-{i:06}", i % 500), 0o644, data);
    }
    let img = image(d.path(), "wide.img", &t, &BtrfsOptions::default(), None);
    check(&img);
    if have_btrfs() {
        let o = Command::new("btrfs").args(["inspect-internal", "dump-tree", "-t", "5"]).arg(&img).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout);
        let root = s.lines().find(|l| l.starts_with("node") || l.starts_with("leaf")).unwrap_or("").to_string();
        assert!(root.contains("level 2"), "fs tree root: {root}");
    }
    if is_root() && have_btrfs() {
        let m = Mount::new(&img, "ro");
        assert_eq!(fs::read_dir(m.path().join("d007")).unwrap().count(), 200);
        assert_eq!(fs::read(m.path().join("d010/file-with-a-longish-name-001010")).unwrap(), pseudo(100 + 1010, 1010));
    }
}

#[test]
fn grub_reads_files() {
    let grub = Command::new("grub-fstest").arg("--help").output().map(|o| o.status.success()).unwrap_or(false);
    if !grub {
        eprintln!("SKIP: grub-fstest (grub-common) not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = awkward(&d.path().join("sparse.host"));
    for (name, opts) in [
        ("grub-plain.img", BtrfsOptions::default()),
        ("grub-zstd.img", opts_with(|o| o.compression = Some(Compression::Zstd))),
        ("grub-zlib.img", opts_with(|o| o.compression = Some(Compression::Zlib))),
    ] {
        let img = image(d.path(), name, &t, &opts, None);
        // Not /sparse: GRUB 2.06 cannot read files with holes under
        // `no-holes` ("extent not found"), kernel-written ones included.
        for path in ["/multi-mib", "/text", "/inline-max", "/just-over", "/one-sector", "/h/big2", "/bin/ping", "/empty"] {
            let node = t.inode(t.find(path.as_bytes()).unwrap());
            let Kind::File(c) = &node.kind else { unreachable!() };
            let mut want = vec![0u8; c.len() as usize];
            c.open().unwrap().read_exact_at(&mut want, 0).unwrap();
            let local = d.path().join("want");
            fs::write(&local, &want).unwrap();
            let o = Command::new("grub-fstest").arg(&img).arg("cmp").arg(path).arg(&local).output().unwrap();
            let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success() && out.trim().is_empty(), "grub-fstest cmp {path} on {name}: {out}");
        }
        let o = Command::new("grub-fstest").arg(&img).arg("ls").arg("/links").output().unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("short"), "{}", String::from_utf8_lossy(&o.stdout));
    }
    // With subvolumes GRUB walks from the top level: /@/...
    let img = image(d.path(), "grub-subvol.img", &t, &subvol_opts_without_home(), None);
    let local = d.path().join("want");
    fs::write(&local, pseudo((3 << 20) + 123, 5)).unwrap();
    let o = Command::new("grub-fstest").arg(&img).arg("cmp").arg("/@/multi-mib").arg(&local).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && out.trim().is_empty(), "grub-fstest cmp /@/multi-mib: {out}");
}

/// Compression runs on a few threads in batches of pieces; what goes where
/// must not depend on that. A tree of 300 files (text-like, random and
/// mixed; 1 byte to 900 KiB, so many batches and files of several pieces)
/// built into a zstd btrfs partition by the CLI with 1, 2 and 3 threads
/// gives the same image, which `btrfs check` passes.
#[test]
fn compressed_image_does_not_depend_on_the_thread_count() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(0x5eed);
    for i in 0..300usize {
        let len = match i % 5 {
            0 => 1 + rng.below(4096) as usize,
            1 => 100_000 + rng.below(900_000) as usize,
            _ => rng.below(300_000) as usize,
        };
        let data: Vec<u8> = match i % 3 {
            0 => rng.bytes(len),
            1 => (0..len).map(|k| b"lorem ipsum dolor sit amet\n"[k % 27]).collect(),
            _ => {
                let mut v = rng.bytes(len / 2);
                v.resize(len, b'z');
                v
            }
        };
        fs::write(src.join(format!("f{i:03}")), data).unwrap();
    }
    let recipe = serde_json::json!({
        "name": "zthreads",
        "source_date_epoch": 1700000000,
        "trees": { "root": [{ "dir": "src" }] },
        "disk": { "partitions": [
            { "label": "root", "type": "linux", "size": "auto", "filesystem": "btrfs", "fs": { "compression": "zstd" }, "tree": "root" }
        ]},
        "outputs": ["raw"]
    });
    fs::write(d.path().join("r.json"), serde_json::to_vec(&recipe).unwrap()).unwrap();
    let mut sums = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = d.path().join(format!("out{threads}"));
        common::run_ok_env(d.path(), &["-q", "build", "r.json", "--out", out.to_str().unwrap()], &[("BUILD_IMAGE_THREADS", threads)]);
        sums.push(common::sha256(&out.join("zthreads.raw")));
    }
    assert!(sums.iter().all(|s| *s == sums[0]), "images differ by thread count: {sums:?}");
    if have_btrfs() {
        let img = d.path().join("out1/zthreads.raw");
        let parts = common::sfdisk(&img);
        let (_, _, start, size) = &parts[0];
        let fsimg = d.path().join("fs.img");
        common::extract(&img, *start, *size, &fsimg);
        check(&fsimg);
    }
}
