//! Benchmark helper for `bench/btrfs.sh`: load a host directory as a tree
//! (`dir` layer, owners preserved), then time only `fs::btrfs::write` into an
//! existing image file (the whole file is the region).
//!
//!     cargo run --release --example btrfs_bench -- TREE IMAGE [none|zstd|zlib]
//!     cargo run --release --example btrfs_bench -- TREE - [none|zstd|zlib]
//!
//! IMAGE must exist with the wanted size (e.g. `truncate -s 1G IMAGE`); it is
//! synced before the clock stops, as `mkfs.btrfs` does. With `-` nothing is
//! written and only the minimum size is computed. Prints one line:
//! `compression=.. content_bytes=.. min_size=.. used_bytes=.. load_s=.. write_s=..`.

use std::path::Path;
use std::time::Instant;

use build_image::disk::region::Region;
use build_image::fs::btrfs::{self, BtrfsOptions, Compression};
use build_image::fs::FsParams;
use build_image::recipe::layer::{DirLayer, Owner};
use build_image::tree::{dir, Tree};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: btrfs_bench TREE IMAGE|- [none|zstd|zlib]".into());
    }
    let compression = match args.get(2).map(String::as_str) {
        None | Some("none") => None,
        Some("zstd") => Some(Compression::Zstd),
        Some("zlib") => Some(Compression::Zlib),
        Some(other) => return Err(format!("unknown compression {other}").into()),
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(1_700_000_000);
    let params = FsParams { label: "bench".into(), uuid: uuid::Uuid::from_bytes([0x42; 16]), seed: [7u8; 32], epoch };
    let opts = BtrfsOptions { compression, ..Default::default() };

    let t0 = Instant::now();
    let mut tree = Tree::new(epoch);
    let layer = DirLayer { dir: args[0].clone(), to: "/".into(), owner: Owner::Preserve };
    dir::apply(&mut tree, &layer, Path::new(&args[0]))?;
    let t1 = Instant::now();
    let min = btrfs::min_size(&tree, &params, &opts);
    let (used, t2) = if args[1] == "-" {
        (0, Instant::now())
    } else {
        let f = std::fs::File::options().read(true).write(true).open(&args[1])?;
        let len = f.metadata()?.len();
        let t = Instant::now();
        let rep = btrfs::write(&tree, Region::new(&f, 0, len, "bench"), &params, &opts)?;
        f.sync_all()?;
        (rep.used_bytes, t)
    };
    let t3 = Instant::now();
    println!(
        "compression={} content_bytes={} min_size={} used_bytes={} load_s={:.3} write_s={:.3}",
        args.get(2).map(String::as_str).unwrap_or("none"),
        tree.content_bytes(),
        min,
        used,
        (t1 - t0).as_secs_f64(),
        (t3 - t2).as_secs_f64()
    );
    Ok(())
}
