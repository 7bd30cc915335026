//! Benchmark helper for `bench/initramfs.sh`: load a host directory as a tree
//! (`dir` layer, owners preserved) and write it as an initramfs.
//!
//!     cargo run --release --example initramfs_bench -- TREE OUT COMPRESSION [LEVEL] [THREADS]
//!
//! COMPRESSION is gzip, zstd or none. Prints one line:
//! `compression=.. entries=.. cpio_bytes=.. out_bytes=.. load_s=.. write_s=.. total_s=..`.

use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use build_image::initramfs;
use build_image::recipe::layer::{DirLayer, Owner};
use build_image::recipe::Compression;
use build_image::tree::{dir, Tree};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: initramfs_bench TREE OUT gzip|zstd|none [LEVEL] [THREADS]".into());
    }
    let compression = match args[2].as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        other => return Err(format!("unknown compression {other}").into()),
    };
    let level = args.get(3).filter(|s| !s.is_empty() && *s != "-").map(|s| s.parse()).transpose()?;
    let threads = match args.get(4) {
        Some(t) => t.parse()?,
        None => initramfs::pgzip::default_threads(),
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX as i64);

    let t0 = Instant::now();
    let mut tree = Tree::new(epoch);
    let layer = DirLayer { dir: args[0].clone(), to: "/".into(), owner: Owner::Preserve };
    dir::apply(&mut tree, &layer, Path::new(&args[0]))?;
    let t1 = Instant::now();
    let file = std::fs::File::create(&args[1])?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let report = initramfs::write_with_threads(&tree, compression, level, threads, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    drop(file);
    let t2 = Instant::now();
    println!(
        "compression={} entries={} cpio_bytes={} out_bytes={} load_s={:.3} write_s={:.3} total_s={:.3}",
        args[2],
        report.entries,
        report.uncompressed_bytes,
        report.compressed_bytes,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t2 - t0).as_secs_f64()
    );
    Ok(())
}
