//! Property tests: proptest generates random trees (names of any bytes up
//! to 255, every inode kind, special mode bits, big uids, xattrs, sparse and
//! empty files, hardlinks); every generated tree, written by our ext4 and
//! Btrfs writers at their minimum size, must pass the real fsck and (as
//! root) read back identically through the kernel. proptest shrinks a
//! failure to a small tree.
//!
//! `PROPTEST_CASES` sets the number of trees (default 8 per filesystem).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use build_image::disk::Region;
use build_image::fs::FsParams;
use build_image::tree::{Content, Inode, Kind, Meta, Tree};
use proptest::prelude::*;

const EPOCH: i64 = 1_700_000_000;

/// One generated entry: where it goes (an index into the directories made
/// so far), its name, and what it is.
#[derive(Debug, Clone)]
struct Spec {
    parent: usize,
    name: Vec<u8>,
    kind: KindSpec,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum KindSpec {
    Dir,
    File {
        data: Vec<u8>,
        hole_before: u32,
    },
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// A hardlink to the n-th file made so far (if any).
    Link(usize),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..40),
        "[a-zA-Z0-9äöü._-]{1,60}".prop_map(|s| s.into_bytes()),
        Just(vec![b'n'; 255]),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b".." && n != b"lost+found" && n.len() <= 255)
}

fn kind() -> impl Strategy<Value = KindSpec> {
    prop_oneof![
        3 => Just(KindSpec::Dir),
        4 => (proptest::collection::vec(any::<u8>(), 0..20000), 0u32..3).prop_map(|(data, h)| KindSpec::File { data, hole_before: h }),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..200).prop_map(KindSpec::Symlink),
        1 => (0u32..4096, 0u32..(1 << 20)).prop_map(|(a, b)| KindSpec::Char(a, b)),
        1 => (0u32..300, 0u32..300).prop_map(|(a, b)| KindSpec::Block(a, b)),
        1 => Just(KindSpec::Fifo),
        1 => (0usize..50).prop_map(KindSpec::Link),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0usize..1000,
        name(),
        kind(),
        0u32..0o10000,
        prop_oneof![0u32..2000, 60000u32..70000, any::<u32>().prop_filter("not -1", |u| *u != u32::MAX)],
        0u32..(1 << 20),
        proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..200)), 0..4),
    )
        .prop_map(|(parent, name, kind, mode, uid, gid, xattrs)| Spec { parent, name, kind, mode, uid, gid, xattrs })
}

fn build_tree(specs: &[Spec]) -> Tree {
    let mut t = Tree::new(EPOCH);
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    for s in specs {
        let parent = dirs[s.parent % dirs.len()].clone();
        let mut path = parent.clone();
        path.push(b'/');
        path.extend_from_slice(&s.name);
        if t.find(&path).is_some() {
            continue;
        }
        if let KindSpec::Link(n) = &s.kind {
            if let Some(target) = files.get(n % files.len().max(1)).filter(|_| !files.is_empty()) {
                t.hardlink(&path, target).unwrap();
            }
            continue;
        }
        let mut meta = Meta::new(s.mode, EPOCH);
        meta.uid = s.uid;
        meta.gid = s.gid;
        for (i, (ns, v)) in s.xattrs.iter().enumerate() {
            let n = format!("{}k{i}", ["user.", "trusted.", "security."][*ns as usize]);
            meta.xattrs.insert(n.into_bytes(), v.clone());
        }
        let kind = match &s.kind {
            KindSpec::Dir => Kind::Dir(BTreeMap::new()),
            KindSpec::File { data, hole_before } => {
                if *hole_before == 0 || data.is_empty() {
                    Kind::File(Content::bytes(data.clone()))
                } else {
                    // A sparse file: a hole of N MiB, then the data.
                    let f = tempfile::tempfile().unwrap();
                    let off = u64::from(*hole_before) << 20;
                    use std::os::unix::fs::FileExt;
                    f.write_all_at(data, off).unwrap();
                    let dir = tempfile::tempdir().unwrap().keep();
                    let p = dir.join("sparse");
                    let g = fs::File::create(&p).unwrap();
                    g.write_all_at(data, off).unwrap();
                    Kind::File(Content::host(&p).unwrap())
                }
            }
            KindSpec::Symlink(target) => Kind::Symlink(target.clone()),
            KindSpec::Char(a, b) => Kind::CharDev { major: *a, minor: *b },
            KindSpec::Block(a, b) => Kind::BlockDev { major: *a, minor: *b },
            KindSpec::Fifo => Kind::Fifo,
            KindSpec::Link(_) => unreachable!(),
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        let is_file = matches!(kind, Kind::File(_));
        t.insert(&path, Inode { meta, kind }).unwrap();
        if is_dir {
            dirs.push(path);
        } else if is_file {
            files.push(path);
        }
    }
    t
}

fn params() -> FsParams {
    FsParams { label: "prop".into(), uuid: build_image::plan::derive_uuid(&[3; 32], "prop"), seed: [5; 32], epoch: EPOCH }
}

/// Compare the mounted filesystem at `mnt` with `tree`: kinds, content,
/// modes, owners, link targets, devices, xattrs, hardlink grouping.
fn compare(tree: &Tree, mnt: &Path) -> Result<(), String> {
    let mut err = Ok(());
    let mut groups: BTreeMap<usize, u64> = BTreeMap::new();
    tree.walk(|v| {
        if err.is_err() || v.depth == 0 {
            return;
        }
        let p = mnt.join(OsStr::from_bytes(v.path));
        let shown = String::from_utf8_lossy(v.path).into_owned();
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                err = Err(format!("{shown}: {e}"));
                return;
            }
        };
        let i = tree.inode(v.ino);
        let mut check = |ok: bool, what: &str| {
            if !ok && err.is_ok() {
                err = Err(format!("{shown}: {what} differs"));
            }
        };
        check(md.mode() == i.st_mode(), "mode");
        check(md.uid() == i.meta.uid && md.gid() == i.meta.gid, "owner");
        if let Some(&ino) = groups.get(&v.ino) {
            check(md.ino() == ino, "hardlink grouping");
        }
        groups.insert(v.ino, md.ino());
        match &i.kind {
            Kind::File(c) => {
                let mut want = vec![0u8; c.len() as usize];
                c.open().unwrap().read_exact_at(&mut want, 0).unwrap();
                check(fs::read(&p).map(|got| got == want).unwrap_or(false), "content");
            }
            Kind::Symlink(t) => check(fs::read_link(&p).map(|l| l.as_os_str().as_bytes() == &t[..]).unwrap_or(false), "link target"),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                check(md.file_type().is_char_device() || md.file_type().is_block_device(), "kind");
                check(libc::major(md.rdev()) == *major && libc::minor(md.rdev()) == *minor, "device number");
            }
            _ => {}
        }
        if !matches!(i.kind, Kind::Symlink(_)) {
            for (k, val) in &i.meta.xattrs {
                // The kernel hides user.* on special files; check where it shows them.
                if k.starts_with(b"user.") && !matches!(i.kind, Kind::File(_) | Kind::Dir(_)) {
                    continue;
                }
                let got = xattr(&p, k);
                check(got.as_deref() == Some(&val[..]), &format!("xattr {}", String::from_utf8_lossy(k)));
            }
        }
    });
    err
}

fn xattr(p: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and buffer.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// Write, fsck, and (as root) mount read-only and compare.
fn check_fs(tree: &Tree, fs: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let f = fs::File::create(&img).unwrap();
    let p = params();
    let size = match fs {
        "ext4" => {
            build_image::fs::ext4::min_size(tree, &p, &build_image::fs::ext4::Ext4Options::from_fs_options(&Default::default()).unwrap())
        }
        _ => {
            build_image::fs::btrfs::min_size(tree, &p, &build_image::fs::btrfs::BtrfsOptions::from_fs_options(&Default::default()).unwrap())
        }
    };
    f.set_len(size).unwrap();
    let r = Region::new(&f, 0, size, "prop");
    match fs {
        "ext4" => {
            build_image::fs::ext4::write(tree, r, &p, &build_image::fs::ext4::Ext4Options::from_fs_options(&Default::default()).unwrap())
                .map(|_| ())
                .map_err(|e| format!("write: {e}"))?
        }
        _ => {
            build_image::fs::btrfs::write(tree, r, &p, &build_image::fs::btrfs::BtrfsOptions::from_fs_options(&Default::default()).unwrap())
                .map(|_| ())
                .map_err(|e| format!("write: {e}"))?
        }
    }
    drop(f);
    let (ok, out) = match fs {
        "ext4" => common::tool("e2fsck", &["-fn", img.to_str().unwrap()]),
        _ => common::tool("btrfs", &["check", "--readonly", "--check-data-csum", img.to_str().unwrap()]),
    };
    if !ok {
        return Err(format!("fsck: {out}"));
    }
    if common::is_root() {
        let mnt = dir.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let (ok, out) = common::tool("mount", &["-o", "loop,ro", "-t", fs, img.to_str().unwrap(), mnt.to_str().unwrap()]);
        if !ok {
            return Err(format!("mount: {out}"));
        }
        let res = compare(tree, &mnt);
        common::tool("umount", &[mnt.to_str().unwrap()]);
        res?;
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    ProptestConfig { cases, max_shrink_iters: 64, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ext4_random_trees_pass_fsck_and_read_back(specs in proptest::collection::vec(spec(), 0..120)) {
        let tree = build_tree(&specs);
        prop_assert_eq!(check_fs(&tree, "ext4"), Ok(()));
    }

    #[test]
    fn btrfs_random_trees_pass_check_and_read_back(specs in proptest::collection::vec(spec(), 0..120)) {
        let tree = build_tree(&specs);
        prop_assert_eq!(check_fs(&tree, "btrfs"), Ok(()));
    }
}
