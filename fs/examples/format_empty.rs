//! Put an empty filesystem on a file or block device by hand, as the guest
//! agent does for a data disk:
//!
//!     cargo run -p imagefs --example format_empty -- ext4|btrfs|vfat PATH [OFFSET [LEN]]
//!
//! LEN defaults to the rest of PATH (its size, found by seeking to its end,
//! which works for block devices too). Label `data`, a fixed UUID, epoch 0.
//! Prints the writer's report.

use std::io::{Seek, SeekFrom};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: format_empty ext4|btrfs|vfat PATH [OFFSET [LEN]]";
    let kind = args.first().and_then(|k| imagefs::FsKind::from_name(k)).ok_or(usage)?;
    let path = args.get(1).ok_or(usage)?;
    let mut file = std::fs::File::options().read(true).write(true).open(path)?;
    let size = file.seek(SeekFrom::End(0))?;
    let offset: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let len: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(size.saturating_sub(offset));
    let uuid = uuid::Uuid::from_bytes([0x5e; 16]);
    let report = imagefs::format_empty(kind, &file, offset, len, "data", uuid, 0)?;
    file.sync_all()?;
    println!("{report:?}");
    Ok(())
}
