//! Unit tests of the writer that need no external tool; the oracle tests
//! (`btrfs check`, kernel read-back) are in `tests/tests/btrfs.rs`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::*;
use crate::fs::FsOptions;
use crate::tree::{Content, Inode, Meta};

fn params() -> FsParams {
    FsParams { label: "lbl".into(), uuid: uuid::Uuid::from_bytes([9; 16]), seed: [3; 32], epoch: 1_000_000 }
}

fn fs_opts(f: impl FnOnce(&mut FsOptions)) -> FsOptions {
    let mut o = FsOptions::default();
    f(&mut o);
    o
}

fn sv(name: &str, from: &str) -> SubvolumeSpec {
    SubvolumeSpec { name: name.into(), from: from.into() }
}

fn small_tree() -> Tree {
    let mut t = Tree::new(1_000_000);
    let f = |d: Vec<u8>| Inode { meta: Meta::new(0o644, 5), kind: Kind::File(Content::bytes(d)) };
    t.insert(b"/etc/hostname", f(b"box\n".to_vec())).unwrap();
    t.insert(b"/home/u/data", f(vec![1u8; 300_000])).unwrap();
    t.insert(b"/var/empty", f(Vec::new())).unwrap();
    t
}

fn write_to(t: &Tree, opts: &BtrfsOptions, size: u64) -> (tempfile::NamedTempFile, Result<FsReport, BtrfsError>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let r = write(t, Region::new(f.as_file(), 0, size, "unit"), &params(), opts);
    (f, r)
}

#[test]
fn options_are_validated() {
    assert_eq!(BtrfsOptions::from_fs_options(&FsOptions::default()).unwrap(), BtrfsOptions::default());
    let o = BtrfsOptions::from_fs_options(&fs_opts(|o| o.compression = Some("zstd".into())));
    if cfg!(feature = "compress") {
        assert_eq!(o.unwrap().compression, Some(Compression::Zstd));
    } else {
        assert!(matches!(o, Err(BtrfsError::CompressionNotBuilt("zstd"))), "{o:?}");
    }
    let e = BtrfsOptions::from_fs_options(&fs_opts(|o| o.compression = Some("lz4".into()))).unwrap_err();
    assert!(e.to_string().contains("`lz4`"), "{e}");
    for bad in ["", "a/b", "..", "."] {
        let e = BtrfsOptions::from_fs_options(&fs_opts(|o| o.subvolumes = vec![sv(bad, "/")])).unwrap_err();
        assert!(matches!(e, BtrfsError::BadSubvolume { .. }), "{bad}: {e}");
    }
    let e = BtrfsOptions::from_fs_options(&fs_opts(|o| o.subvolumes = vec![sv("@", "/"), sv("@", "/home")])).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let e = BtrfsOptions::from_fs_options(&fs_opts(|o| o.subvolumes = vec![sv("@", "/"), sv("@2", "/./")])).unwrap_err();
    assert!(e.to_string().contains("already holds"), "{e}");
    let e = BtrfsOptions::from_fs_options(&fs_opts(|o| {
        o.subvolumes = vec![sv("@", "/")];
        o.default_subvolume = Some("@home".into());
    }))
    .unwrap_err();
    assert!(matches!(e, BtrfsError::BadDefault(_)), "{e}");
}

#[test]
fn subvolume_sources_must_be_directories() {
    let t = small_tree();
    let opts = BtrfsOptions::from_fs_options(&fs_opts(|o| o.subvolumes = vec![sv("@h", "/etc/hostname")])).unwrap();
    let (_f, r) = write_to(&t, &opts, 64 << 20);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("/etc/hostname"), "{e}");
    // A subvolume name that collides with a top-level entry.
    let opts = BtrfsOptions::from_fs_options(&fs_opts(|o| o.subvolumes = vec![sv("etc", "/home")])).unwrap();
    let (_f, r) = write_to(&t, &opts, 64 << 20);
    assert!(r.unwrap_err().to_string().contains("already has an entry"));
}

#[test]
fn minimum_size_is_exact() {
    let t = small_tree();
    let opts = BtrfsOptions::default();
    let need = min_size(&t, &params(), &opts);
    assert!(need > 1 << 20 && need < 40 << 20, "{need}");
    let (_f, r) = write_to(&t, &opts, need);
    r.unwrap();
    let (_f, r) = write_to(&t, &opts, need - 4096);
    match r {
        Err(BtrfsError::TooSmall { need: n, .. }) => assert_eq!(n, need),
        other => panic!("expected TooSmall, got {other:?}"),
    }
}

#[test]
fn names_longer_than_255_bytes_are_refused() {
    let mut t = Tree::new(0);
    let name = format!("/{}", "x".repeat(256));
    t.insert(name.as_bytes(), Inode { meta: Meta::new(0o644, 0), kind: Kind::Fifo }).unwrap();
    let (_f, r) = write_to(&t, &BtrfsOptions::default(), 64 << 20);
    assert!(matches!(r, Err(BtrfsError::NameTooLong { len: 256, .. })));
}

#[test]
fn superblocks_carry_identity_and_checksums() {
    let t = small_tree();
    let (f, r) = write_to(&t, &BtrfsOptions::default(), 80 << 20);
    r.unwrap();
    let file: &File = f.as_file();
    for off in [65536u64, 64 << 20] {
        let mut sb = vec![0u8; 4096];
        file.read_exact_at(&mut sb, off).unwrap();
        assert_eq!(&sb[0x40..0x48], MAGIC);
        assert_eq!(&sb[0x20..0x30], &[9u8; 16]);
        assert_eq!(u64::from_le_bytes(sb[0x30..0x38].try_into().unwrap()), off);
        assert_eq!(u32::from_le_bytes(sb[0..4].try_into().unwrap()), crc::crc32c(&sb[0x20..]));
        assert_eq!(&sb[0x12b..0x12e], b"lbl");
        let incompat = u64::from_le_bytes(sb[0xbc..0xc4].try_into().unwrap());
        assert_eq!(incompat, 0x341);
        let compat_ro = u64::from_le_bytes(sb[0xb4..0xbc].try_into().unwrap());
        assert_eq!(compat_ro, 3);
    }
}

#[test]
fn identical_inputs_give_identical_images() {
    let t = small_tree();
    let opts = BtrfsOptions { compression: cfg!(feature = "compress").then_some(Compression::Zlib), ..Default::default() };
    let (a, r) = write_to(&t, &opts, 40 << 20);
    r.unwrap();
    let (b, r) = write_to(&t, &opts, 40 << 20);
    r.unwrap();
    assert!(std::fs::read(a.path()).unwrap() == std::fs::read(b.path()).unwrap());
}

#[test]
fn physical_allocation_skips_superblock_mirrors() {
    let mut p = PhysAlloc::new(1 << 30);
    p.cursor = 60 * MIB;
    // A DUP stripe that would cover 64 MiB moves past it.
    assert_eq!(p.alloc_upto(8 * MIB, true), (65 * MIB, 8 * MIB));
    // A data chunk stops before it.
    let mut p = PhysAlloc::new(1 << 30);
    p.cursor = 60 * MIB;
    assert_eq!(p.alloc_upto(8 * MIB, false), (60 * MIB, 4 * MIB));
    assert_eq!(p.alloc_upto(4 * MIB, false), (65 * MIB, 4 * MIB));
    // No mirror on a small device.
    let mut p = PhysAlloc::new(64 * MIB);
    p.cursor = 60 * MIB;
    assert_eq!(p.alloc_upto(8 * MIB, true), (60 * MIB, 8 * MIB));
}

#[test]
fn oversized_items_name_the_path() {
    let mut t = Tree::new(0);
    let mut m = Meta::new(0o644, 0);
    m.xattrs.insert(b"user.huge".to_vec(), vec![0; 20_000]);
    t.insert(b"/etc/big-xattr", Inode { meta: m, kind: Kind::Fifo }).unwrap();
    let (_f, r) = write_to(&t, &BtrfsOptions::default(), 64 << 20);
    let e = r.unwrap_err();
    assert!(matches!(e, BtrfsError::ItemTooLarge { .. }) && e.to_string().contains("/etc/big-xattr"), "{e}");
    let mut t = Tree::new(0);
    t.insert(b"/l", Inode { meta: Meta::new(0o777, 0), kind: Kind::Symlink(vec![b'a'; 4096]) }).unwrap();
    let (_f, r) = write_to(&t, &BtrfsOptions::default(), 64 << 20);
    let e = r.unwrap_err();
    assert!(matches!(e, BtrfsError::SymlinkTooLong { len: 4096, .. }) && e.to_string().contains("/l"), "{e}");
}
