//! Byte-identity reference for the filesystem writers: writes one fixed
//! tree (files inline and from host files, a sparse file, hardlinks, short
//! and long symlinks, devices, xattrs, a directory of 300 entries) as ext4,
//! btrfs (plain, subvolumes, zstd, zlib) and vfat images, and prints the
//! sha256 of each. Run it before and after a change to the writers that
//! must not change their output, and compare:
//!
//!     cargo run -q -p build-image --example fs_reference -- DIR
//!
//! DIR receives the images (about 700 MiB, sparse) and the host files the
//! tree references. Prints `NAME SIZE SHA256 min_size=..` per image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use build_image::disk::Region;
use build_image::fs::btrfs::{self, BtrfsOptions, Compression, SubvolumeSpec};
use build_image::fs::ext4::{self, Ext4Options};
use build_image::fs::{fat, FsParams};
use build_image::tree::{Content, Inode, Kind, Meta, Tree};
use sha2::{Digest, Sha256};

const EPOCH: i64 = 1_700_000_000;

fn params(label: &str) -> FsParams {
    FsParams { label: label.into(), uuid: uuid::Uuid::from_bytes([0x21; 16]), seed: [0x77; 32], epoch: EPOCH }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ salt).collect()
}

fn file(mode: u32, c: Content) -> Inode {
    Inode { meta: Meta::new(mode, EPOCH - 1000), kind: Kind::File(c) }
}

/// Host files the tree refers to: a 6 MiB file (copy_file_range, btrfs's
/// O_DIRECT path) and a 9 MiB sparse one (data at 0..1 MiB and 6..7 MiB).
fn host_files(dir: &Path) -> Result<(Content, Content), Box<dyn std::error::Error>> {
    let big = dir.join("big.bin");
    std::fs::write(&big, pattern(6 << 20, 1))?;
    let sparse = dir.join("sparse.bin");
    let f = File::create(&sparse)?;
    f.set_len(9 << 20)?;
    f.write_all_at(&pattern(1 << 20, 2), 0)?;
    f.write_all_at(&pattern(1 << 20, 3), 6 << 20)?;
    drop(f);
    Ok((Content::host(&big)?, Content::host(&sparse)?))
}

/// The tree for ext4 and btrfs.
fn full_tree(big: &Content, sparse: &Content) -> Tree {
    let mut t = Tree::new(EPOCH);
    let mut etc = Meta::new(0o755, EPOCH - 5);
    etc.xattrs = BTreeMap::from([(b"user.note".to_vec(), b"etc".to_vec())]);
    t.insert(b"/etc", Inode { meta: etc, kind: Kind::Dir(BTreeMap::new()) }).unwrap();
    t.insert(b"/etc/hostname", file(0o644, Content::bytes(*b"reference\n"))).unwrap();
    let mut secret = file(0o600, Content::bytes(pattern(3000, 4)));
    secret.meta.uid = 1000;
    secret.meta.gid = 100;
    secret.meta.xattrs.insert(b"security.selinux".to_vec(), b"system_u:object_r:etc_t:s0\0".to_vec());
    t.insert(b"/etc/secret", secret).unwrap();
    t.insert(b"/usr/lib/mid.bin", file(0o644, Content::bytes(pattern(100 << 10, 5)))).unwrap();
    t.insert(b"/usr/lib/big.bin", file(0o644, big.clone())).unwrap();
    t.insert(b"/usr/lib/sparse.bin", file(0o644, sparse.clone())).unwrap();
    t.insert(b"/usr/lib/empty", file(0o644, Content::bytes(Vec::new()))).unwrap();
    t.insert(b"/usr/bin/tool", file(0o4755, Content::bytes(pattern(70_000, 6)))).unwrap();
    t.hardlink(b"/usr/bin/tool-alias", b"/usr/bin/tool").unwrap();
    t.hardlink(b"/srv/big-again", b"/usr/lib/big.bin").unwrap();
    let link = |target: &[u8]| Inode { meta: Meta::new(0o777, EPOCH), kind: Kind::Symlink(target.to_vec()) };
    t.insert(b"/bin", link(b"usr/bin")).unwrap();
    t.insert(b"/usr/lib/long-link", link(&[b'x'; 200])).unwrap();
    let node = |kind: Kind| Inode { meta: Meta::new(0o660, EPOCH), kind };
    t.insert(b"/dev/null", node(Kind::CharDev { major: 1, minor: 3 })).unwrap();
    t.insert(b"/dev/vda", node(Kind::BlockDev { major: 254, minor: 0 })).unwrap();
    t.insert(b"/dev/fifo", node(Kind::Fifo)).unwrap();
    t.insert(b"/dev/sock", node(Kind::Socket)).unwrap();
    t.insert(b"/tmp", Inode { meta: Meta::new(0o1777, EPOCH), kind: Kind::Dir(BTreeMap::new()) }).unwrap();
    for i in 0..300u32 {
        let name = format!("/var/many/entry-{i:04}-{}", "n".repeat((i % 40) as usize));
        t.insert(name.as_bytes(), file(0o644, Content::bytes(pattern(i as usize * 37, i as u8)))).unwrap();
    }
    t
}

/// The tree for vfat: directories and regular files only.
fn fat_tree(big: &Content) -> Tree {
    let mut t = Tree::new(EPOCH);
    t.insert(b"/EFI/BOOT/BOOTX64.EFI", file(0o755, big.clone())).unwrap();
    t.insert(b"/EFI/Linux/a long file name.conf", file(0o644, Content::bytes(*b"title x\n"))).unwrap();
    t.insert(b"/loader/mid.bin", file(0o644, Content::bytes(pattern(100 << 10, 9)))).unwrap();
    for i in 0..40u32 {
        t.insert(format!("/many/F{i}.TXT").as_bytes(), file(0o644, Content::bytes(pattern(i as usize * 100, 1)))).unwrap();
    }
    t
}

fn image(
    dir: &Path,
    name: &str,
    size: u64,
    write: impl FnOnce(Region<'_>) -> Result<String, String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = dir.join(format!("{name}.img"));
    let f = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
    f.set_len(size)?;
    let report = write(Region::new(&f, 0, size, name)).map_err(|e| format!("{name}: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut r = File::open(&path)?;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    println!("{name} {size} {} {report}", hex::encode(h.finalize()));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: fs_reference DIR")?;
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let (big, sparse) = host_files(dir)?;
    let tree = full_tree(&big, &sparse);

    let ext4_variants = [
        ("ext4-default", Ext4Options::default()),
        ("ext4-bare", Ext4Options { journal: false, resize_inode: false, dir_index: false, inodes: Some(500), ..Ext4Options::default() }),
    ];
    for (name, o) in ext4_variants {
        let p = params("root");
        let min = ext4::min_size(&tree, &p, &o);
        image(dir, name, 128 << 20, |r| {
            ext4::write(&tree, r, &p, &o).map(|rep| format!("min_size={min} used={}", rep.used_bytes)).map_err(|e| e.to_string())
        })?;
    }

    let sv = |name: &str, from: &str| SubvolumeSpec { name: name.into(), from: from.into() };
    let btrfs_variants = [
        ("btrfs-default", BtrfsOptions::default()),
        (
            "btrfs-subvolumes",
            BtrfsOptions {
                subvolumes: vec![sv("@", "/"), sv("@var", "/var")],
                default_subvolume: Some("@".into()),
                ..BtrfsOptions::default()
            },
        ),
        ("btrfs-zstd", BtrfsOptions { compression: Some(Compression::Zstd), ..BtrfsOptions::default() }),
        ("btrfs-zlib", BtrfsOptions { compression: Some(Compression::Zlib), ..BtrfsOptions::default() }),
    ];
    for (name, o) in btrfs_variants {
        let p = params("data");
        let min = btrfs::min_size(&tree, &p, &o);
        image(dir, name, 160 << 20, |r| {
            btrfs::write(&tree, r, &p, &o).map(|rep| format!("min_size={min} used={}", rep.used_bytes)).map_err(|e| e.to_string())
        })?;
    }

    let ft = fat_tree(&big);
    for (name, size) in [("vfat-small", 16u64 << 20), ("vfat-fat32", 64 << 20)] {
        image(dir, name, size, |r| {
            fat::write(&ft, r, &params("ESP")).map(|rep| format!("notes={:?}", rep.notes)).map_err(|e| e.to_string())
        })?;
    }
    Ok(())
}
