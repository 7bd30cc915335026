//! Benchmark helper for `bench/ext4.sh`: load a host directory as a tree
//! (`dir` layer, owners preserved), then write it as an ext4 filesystem into
//! a new file of SIZE bytes (default: the smallest size that holds the tree
//! plus 20%, as `"size": "auto"` gives), then fsync it (mke2fs fsyncs too).
//!
//!     cargo run --release --example ext4_bench -- TREE IMG [SIZE]
//!
//! Prints one line: `entries=.. min_bytes=.. size_bytes=.. used_bytes=..
//! load_s=.. min_s=.. write_s=.. sync_s=.. fs_s=.. total_s=..`, where
//! `fs_s` = `write_s` + `sync_s` is the writer alone (no tree loading).

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use build_image::disk::Region;
use build_image::fs::ext4::{self, Ext4Options};
use build_image::fs::FsParams;
use build_image::recipe::layer::{DirLayer, Owner};
use build_image::tree::{dir, Tree};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: ext4_bench TREE IMG [SIZE]".into());
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(1_700_000_000);
    let params = FsParams { label: "bench".into(), uuid: uuid::Uuid::from_bytes([0x42; 16]), seed: [7; 32], epoch };
    let opts = Ext4Options::default();

    let t0 = Instant::now();
    let mut tree = Tree::new(epoch);
    let layer = DirLayer { dir: args[0].clone(), to: "/".into(), owner: Owner::Preserve };
    dir::apply(&mut tree, &layer, Path::new(&args[0]))?;
    let t1 = Instant::now();
    let min = ext4::min_size(&tree, &params, &opts);
    let t2 = Instant::now();
    let size = match args.get(2) {
        Some(s) => s.parse()?,
        None => (min + min / 5).div_ceil(4096) * 4096,
    };

    let t3 = Instant::now();
    let f = File::options().read(true).write(true).create(true).truncate(true).open(&args[1])?;
    f.set_len(size)?;
    let report = ext4::write(&tree, Region::new(&f, 0, size, "bench"), &params, &opts)?;
    let t4 = Instant::now();
    f.sync_all()?;
    let t5 = Instant::now();
    let mut entries = 0u64;
    tree.walk(|_| entries += 1);
    println!(
        "entries={} min_bytes={} size_bytes={} used_bytes={} load_s={:.3} min_s={:.3} write_s={:.3} sync_s={:.3} fs_s={:.3} total_s={:.3}",
        entries,
        min,
        size,
        report.used_bytes,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t4 - t3).as_secs_f64(),
        (t5 - t4).as_secs_f64(),
        (t5 - t3).as_secs_f64(),
        (t5 - t0).as_secs_f64()
    );
    Ok(())
}
