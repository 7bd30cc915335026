//! Unit tests: the real e2fsprogs tools are the oracles.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::tree::{Content, Inode, Kind, Meta, Tree};

pub(crate) fn params() -> FsParams {
    FsParams { label: "root".into(), uuid: uuid::Uuid::from_bytes([0x11; 16]), seed: [0x5a; 32], epoch: 1_700_000_000 }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok()
}

/// Write `tree` into a fresh image of `size` bytes at `path`.
fn build(tree: &Tree, path: &Path, size: u64, opts: &Ext4Options) -> Result<FsReport, Ext4Error> {
    let f = File::options().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    f.set_len(size).unwrap();
    let r = Region::new(&f, 0, size, "test");
    write(tree, r, &params(), opts)
}

fn fsck(path: &Path) {
    if !have("e2fsck") {
        eprintln!("e2fsck missing: skipping the fsck check");
        return;
    }
    let out = Command::new("e2fsck").arg("-fn").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn empty_tree_is_clean() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("e.img");
    let tree = Tree::new(1_700_000_000);
    build(&tree, &img, 64 << 20, &Ext4Options::default()).unwrap();
    fsck(&img);
}

#[test]
fn multi_group_and_small_are_clean() {
    let d = tempfile::tempdir().unwrap();
    let tree = Tree::new(1_700_000_000);
    for (i, size) in [(0, 5u64 << 20), (1, 300 << 20), (2, (1 << 30) + 12345)].into_iter() {
        let img = d.path().join(format!("g{i}.img"));
        build(&tree, &img, size, &Ext4Options::default()).unwrap();
        fsck(&img);
    }
}

#[test]
fn small_tree_is_clean() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("s.img");
    let mut tree = Tree::new(1_700_000_000);
    tree.insert(b"etc/hostname", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(b"box\n".to_vec())) }).unwrap();
    tree.insert(b"bin", Inode { meta: Meta::new(0o777, 1), kind: Kind::Symlink(b"usr/bin".to_vec()) }).unwrap();
    build(&tree, &img, 32 << 20, &Ext4Options::default()).unwrap();
    fsck(&img);
}

#[test]
fn features_are_checked() {
    let mut o =
        FsOptions { features: vec!["-resize_inode".into(), "^has_journal".into(), "+metadata_csum".into()], ..FsOptions::default() };
    let r = Ext4Options::from_fs_options(&o).unwrap();
    assert!(!r.resize_inode && !r.journal);
    o.features = vec!["+frobnicate".into()];
    let e = Ext4Options::from_fs_options(&o).unwrap_err().to_string();
    assert!(e.contains("frobnicate"), "{e}");
    o.features = vec!["+orphan_file".into()];
    assert!(Ext4Options::from_fs_options(&o).unwrap_err().to_string().contains("orphan_file"));
}

#[test]
fn dx_hash_matches_debugfs() {
    if !have("debugfs") {
        eprintln!("debugfs missing: skipping");
        return;
    }
    let seed_bytes: Vec<u8> = (0u8..16).map(|i| i.wrapping_mul(17).wrapping_add(3)).collect();
    let mut seed = [0u32; 4];
    for (i, w) in seed.iter_mut().enumerate() {
        *w = u32::from_le_bytes(seed_bytes[i * 4..i * 4 + 4].try_into().unwrap());
    }
    let uuid = uuid::Uuid::from_slice(&seed_bytes).unwrap().hyphenated().to_string();
    let long = "x".repeat(70);
    let utf = "é".repeat(127);
    for name in ["a", "lost+found", "héllo", "日本語のファイル名", long.as_str(), utf.as_str(), "abcd", "abcdefgh"] {
        let out = Command::new("debugfs").arg("-R").arg(format!("dx_hash -h half_md4 -s {uuid} {name}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text.split("is 0x").nth(1).and_then(|s| s.split_whitespace().next()).expect("debugfs output");
        let want = u32::from_str_radix(hex, 16).unwrap();
        assert_eq!(super::image::hash_for_tests(name.as_bytes(), &seed), want, "hash of {name}");
    }
}

#[test]
fn too_small_names_the_size() {
    let mut tree = Tree::new(1_700_000_000);
    tree.insert(b"big", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(vec![7u8; 3 << 20])) }).unwrap();
    let d = tempfile::tempdir().unwrap();
    let e = build(&tree, &d.path().join("t.img"), 2 << 20, &Ext4Options::default()).unwrap_err();
    let min = min_size(&tree, &params(), &Ext4Options::default());
    assert!(matches!(e, Ext4Error::TooSmall { needed, .. } if needed == min), "{e}");
    assert!(e.to_string().contains(&min.to_string()));
    build(&tree, &d.path().join("t.img"), min, &Ext4Options::default()).unwrap();
    fsck(&d.path().join("t.img"));
}

#[test]
fn option_variants_are_clean() {
    let mut tree = Tree::new(1_700_000_000);
    for i in 0..600 {
        tree.insert(format!("d/f{i:04}").as_bytes(), Inode { meta: Meta::new(0o644, 1), kind: Kind::Fifo }).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let variants: Vec<(Vec<&str>, Option<u64>, Option<u32>)> = vec![
        (vec!["-has_journal"], None, None),
        (vec!["-resize_inode"], None, Some(0)),
        (vec!["-dir_index", "-huge_file", "-dir_nlink"], Some(2048), None),
        (vec![], Some(700), Some(50)),
    ];
    for (k, (features, inodes, reserved)) in variants.into_iter().enumerate() {
        let fo = FsOptions {
            features: features.iter().map(|s| s.to_string()).collect(),
            inodes,
            reserved_percent: reserved,
            ..FsOptions::default()
        };
        let opts = Ext4Options::from_fs_options(&fo).unwrap();
        let img = d.path().join(format!("v{k}.img"));
        build(&tree, &img, 200 << 20, &opts).unwrap();
        fsck(&img);
    }
    // Too few explicit inodes is an error, not a silent change.
    let fo = FsOptions { inodes: Some(100), ..FsOptions::default() };
    let e = build(&tree, &d.path().join("x.img"), 200 << 20, &Ext4Options::from_fs_options(&fo).unwrap()).unwrap_err();
    assert!(matches!(e, Ext4Error::TooFewInodes { .. }), "{e}");
}

/// A larger region never fits less: around the journal-size steps
/// (32768 blocks: 4 → 16 MiB) the journal shrinks instead of failing.
#[test]
fn bigger_regions_always_fit() {
    let mut tree = Tree::new(1_700_000_000);
    tree.insert(b"blob", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(vec![1u8; 118 << 20])) }).unwrap();
    let d = tempfile::tempdir().unwrap();
    let min = min_size(&tree, &params(), &Ext4Options::default());
    assert!(min < 128 << 20, "min {min}");
    for size in [min, min + 4096, 128 << 20, (128 << 20) + (4 << 20), (128 << 20) + (12 << 20), 160 << 20] {
        let img = d.path().join("j.img");
        let rep = build(&tree, &img, size, &Ext4Options::default()).unwrap_or_else(|e| panic!("size {size}: {e}"));
        if size == (128 << 20) + (4 << 20) {
            assert!(rep.notes.iter().any(|n| n.contains("journal shrunk")), "{:?}", rep.notes);
        }
        fsck(&img);
    }
}

#[test]
fn errors_name_the_entry() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("x.img");
    let opts = Ext4Options::default();
    let f = |c: &[u8]| Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(c.to_vec())) };

    let mut t = Tree::new(1_700_000_000);
    t.insert(format!("d/{}", "n".repeat(256)).as_bytes(), f(b"")).unwrap();
    let e = build(&t, &img, 16 << 20, &opts).unwrap_err();
    assert!(matches!(&e, Ext4Error::NameTooLong { len: 256, path } if path.starts_with("/d/nnn")), "{e}");

    let mut t = Tree::new(1_700_000_000);
    let mut i = f(b"x");
    i.meta.xattrs.insert(b"user.huge".to_vec(), vec![1; 5000]);
    t.insert(b"a/x", i).unwrap();
    let e = build(&t, &img, 16 << 20, &opts).unwrap_err();
    assert!(matches!(&e, Ext4Error::Xattr { path, .. } if path == "/a/x"), "{e}");

    let mut t = Tree::new(1_700_000_000);
    let mut i = f(b"x");
    i.meta.xattrs.insert(b"os2.name".to_vec(), vec![1]);
    t.insert(b"b", i).unwrap();
    let e = build(&t, &img, 16 << 20, &opts).unwrap_err();
    assert!(e.to_string().contains("os2.name"), "{e}");

    let mut t = Tree::new(1_700_000_000);
    t.insert(b"lost+found", f(b"oops")).unwrap();
    let e = build(&t, &img, 16 << 20, &opts).unwrap_err();
    assert!(matches!(e, Ext4Error::LostFound { .. }), "{e}");

    // A tree's own lost+found directory is used as it is.
    let mut t = Tree::new(1_700_000_000);
    t.insert(b"lost+found/keep", f(b"kept")).unwrap();
    build(&t, &img, 16 << 20, &opts).unwrap();
    fsck(&img);
}

/// Sizes just around group boundaries, including a small last group that
/// would have to hold a whole flex group's bitmaps and inode table.
#[test]
fn awkward_sizes_are_clean() {
    let d = tempfile::tempdir().unwrap();
    let mut tree = Tree::new(1_700_000_000);
    tree.insert(b"f", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(vec![3u8; 100_000])) }).unwrap();
    let bpg = 32768u64;
    let cases = [(1, 0), (1, 1), (1, 49), (1, 180), (1, 700), (3, 130), (16, 100), (16, 600), (16, 2000)];
    for (groups, extra) in cases {
        let size = (groups * bpg + extra) * BS + 1000;
        let img = d.path().join("s.img");
        build(&tree, &img, size, &Ext4Options::default()).unwrap_or_else(|e| panic!("{groups} groups + {extra}: {e}"));
        fsck(&img);
    }
}

#[test]
fn small_trees_keep_their_journal() {
    let d = tempfile::tempdir().unwrap();
    let mut tree = Tree::new(1_700_000_000);
    tree.insert(b"f", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::bytes(vec![3u8; 4 << 20])) }).unwrap();
    let min = min_size(&tree, &params(), &Ext4Options::default());
    assert!(min >= 2048 * BS, "{min}");
    for extra in [0u64, 1, 100, 1000, 3000] {
        let img = d.path().join("t.img");
        let rep = build(&tree, &img, min + extra * BS, &Ext4Options::default()).unwrap();
        assert!(!rep.notes.iter().any(|n| n.contains("no journal")), "{:?}", rep.notes);
        fsck(&img);
    }
    // Without a journal the minimum is smaller.
    let nj = Ext4Options { journal: false, ..Ext4Options::default() };
    assert!(min_size(&tree, &params(), &nj) < min);
}

/// Geometry as mke2fs 1.47 computes it (`mke2fs -t ext4 -b 4096 -T default`
/// on empty files of these sizes, then `dumpe2fs -h`).
#[test]
fn geometry_matches_mke2fs() {
    // size, inodes, blocks, reserved GDT, inodes per group, journal blocks
    let cases: [(u64, u64, u64, u64, u64, u64); 6] = [
        (64 << 20, 4096, 16384, 7, 4096, 1024),
        (200 << 20, 12800, 51200, 24, 6400, 4096),
        (1 << 30, 65536, 262144, 127, 8192, 8192),
        (5 << 30, 327680, 1310720, 639, 8192, 16384),
        (64 << 30, 4194304, 16777216, 1024, 8192, 131072),
        (300 << 30, 19660800, 78643200, 1024, 8192, 262144),
    ];
    for (size, inodes, blocks, rsv, ipg, journal) in cases {
        let (g, _) = super::layout::Geometry::new(size / BS, &Ext4Options::default(), 11).unwrap();
        assert_eq!((g.inodes_count(), g.blocks, g.rsv_gdt, g.ipg), (inodes, blocks, rsv, ipg), "size {size}");
        assert_eq!(super::image::journal_blocks(g.blocks), Some(journal), "size {size}");
    }
}

/// Every size from the minimum up fits (planning only, no writing): no
/// pockets where a larger region holds less (group dropping, journal steps).
#[test]
fn every_size_above_min_fits() {
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("data");
    std::fs::write(&host, vec![0x77u8; 1 << 20]).unwrap();
    let mut tree = Tree::new(1_700_000_000);
    for i in 0..110 {
        let c = Content::host(&host).unwrap();
        tree.insert(format!("blobs/{i}").as_bytes(), Inode { meta: Meta::new(0o644, 1), kind: Kind::File(c) }).unwrap();
    }
    for i in 0..3000 {
        tree.insert(format!("small/{i}").as_bytes(), Inode { meta: Meta::new(0o644, 1), kind: Kind::Fifo }).unwrap();
    }
    let p = params();
    let o = Ext4Options::default();
    let min = min_size(&tree, &p, &o) / BS;
    assert!(super::image::Plan::new(&tree, min - 1, &p, &o).is_err());
    let mut b = min;
    let mut failures = Vec::new();
    while b < min + 3 * 32768 {
        if let Err(e) = super::image::Plan::new(&tree, b, &p, &o) {
            failures.push((b, e.to_string()));
        }
        b += 61;
    }
    assert!(failures.is_empty(), "min {min}: sizes above the minimum fail: {:?}", &failures[..failures.len().min(5)]);
}

/// A partition inside a larger file: the neighbours stay untouched and the
/// filesystem extracted from its offset is clean.
#[test]
fn region_at_an_offset() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("disk.img");
    let (start, len, total) = (3u64 << 20, 40u64 << 20, 48u64 << 20);
    let f = File::options().read(true).write(true).create(true).truncate(true).open(&disk).unwrap();
    f.set_len(total).unwrap();
    let junk = vec![0x5Au8; 1 << 20];
    for off in [0u64, 1 << 20, 2 << 20, start + len, start + len + (1 << 20)] {
        f.write_all_at(&junk, off).unwrap();
    }
    let mut tree = Tree::new(1_700_000_000);
    let src = d.path().join("src");
    std::fs::write(&src, vec![0xC3u8; 5 << 20]).unwrap();
    tree.insert(b"data", Inode { meta: Meta::new(0o644, 1), kind: Kind::File(Content::host(&src).unwrap()) }).unwrap();
    write(&tree, Region::new(&f, start, len, "part"), &params(), &Ext4Options::default()).unwrap();
    let mut back = vec![0u8; 1 << 20];
    for off in [0u64, 1 << 20, 2 << 20, start + len, start + len + (1 << 20)] {
        f.read_exact_at(&mut back, off).unwrap();
        assert!(back == junk, "bytes outside the region changed at {off}");
    }
    let part = d.path().join("part.img");
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, start).unwrap();
    std::fs::write(&part, &buf).unwrap();
    fsck(&part);
    if have("debugfs") {
        let out = Command::new("debugfs").arg("-R").arg("cat /data").arg(&part).output().unwrap();
        assert!(out.stdout.len() == 5 << 20 && out.stdout.iter().all(|&b| b == 0xC3), "content read back by debugfs");
    }
}

/// More than 65000 subdirectories: `dir_nlink` stores the count as 1.
#[test]
fn many_subdirectories() {
    let mut tree = Tree::new(1_700_000_000);
    for i in 0..65010 {
        tree.insert(format!("many/{i}").as_bytes(), Inode { meta: Meta::new(0o755, 1), kind: Kind::Dir(Default::default()) }).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("n.img");
    let size = min_size(&tree, &params(), &Ext4Options::default());
    build(&tree, &img, size, &Ext4Options::default()).unwrap();
    fsck(&img);
    let nl = Ext4Options { dir_nlink: false, ..Ext4Options::default() };
    assert!(matches!(build(&tree, &img, size, &nl), Err(Ext4Error::TooManyLinks { .. })));
}
