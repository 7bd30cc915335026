//! Filesystem images made once per process with the builder's own writers
//! (FAT, ext4, btrfs), labelled `OEM` and holding the OEM files `inspect`
//! reads back, kept as their non-zero 4 KiB blocks: the `inspect` target
//! places them in partitions and patches bytes over them, so it reaches
//! the filesystem readers (`fatfs`, `ext4-view`, the btrfs reader) with
//! realistic, corrupted images instead of 30 MiB inputs.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use build_image::disk::region::Region;
use build_image::fs::{btrfs, ext4, fat, FsParams};
use build_image::tree::{Content, Inode, Kind, Meta, Tree};

/// A filesystem image: its size and its non-zero blocks.
pub struct Image {
    pub len: u64,
    pub blocks: Vec<(u64, Vec<u8>)>,
}

const FILES: &[(&str, &str)] = &[
    ("config.json", r#"{"hostname":"h","user":"admin","network":{"networks":[]}}"#),
    ("layers/10-platform-qemu.json", r#"{"network":{"networks":[]}}"#),
    ("layers/20-recipe.json", r#"{"hostname":"h","user":"admin"}"#),
    ("config.d/50-site.json", r#"{"hostname":"site","site":{"rack":7}}"#),
    ("config.d/60-broken.json", r#"{"hostname": "#),
    ("EFI/BOOT/BOOTX64.EFI", "MZ not really a PE image"),
];

fn tree() -> Tree {
    let mut t = Tree::new(1_700_000_000);
    for d in ["layers", "config.d", "EFI", "EFI/BOOT"] {
        t.insert(d.as_bytes(), Inode { meta: Meta::new(0o755, 1_700_000_000), kind: Kind::Dir(BTreeMap::new()) }).expect("dir");
    }
    for (p, c) in FILES {
        t.insert(p.as_bytes(), Inode { meta: Meta::new(0o644, 1_700_000_000), kind: Kind::File(Content::bytes(c.as_bytes().to_vec())) })
            .expect("file");
    }
    t
}

fn params() -> FsParams {
    FsParams { label: "OEM".into(), uuid: uuid_from(7), seed: [9; 32], epoch: 1_700_000_000 }
}

fn uuid_from(b: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([b; 16])
}

fn keep(f: &File, len: u64) -> Image {
    let mut blocks = Vec::new();
    let mut off = 0;
    while off < len {
        let mut b = vec![0u8; 4096.min((len - off) as usize)];
        f.read_exact_at(&mut b, off).expect("reading the image back");
        if b.iter().any(|x| *x != 0) {
            blocks.push((off, b));
        }
        off += 4096;
    }
    Image { len, blocks }
}

fn make(len: u64, write: impl FnOnce(&Tree, Region<'_>)) -> Image {
    let f = tempfile::tempfile().expect("a temp file");
    f.set_len(len).expect("sizing the image");
    let t = tree();
    write(&t, Region::new(&f, 0, len, "fuzz"));
    keep(&f, len)
}

/// FAT, ext4 and btrfs images, made on first use.
pub fn all() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let fat = make(8 << 20, |t, r| {
            fat::write(t, r, &params()).expect("FAT image");
        });
        let ext4 = make(8 << 20, |t, r| {
            ext4::write(t, r, &params(), &ext4::Ext4Options::default()).expect("ext4 image");
        });
        let opts = btrfs::BtrfsOptions::default();
        let blen = btrfs::min_size(&tree(), &params(), &opts).max(16 << 20);
        let btrfs = make(blen, |t, r| {
            btrfs::write(t, r, &params(), &opts).expect("btrfs image");
        });
        vec![fat, ext4, btrfs]
    })
}
