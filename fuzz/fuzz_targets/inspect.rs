//! `build-image inspect` on an image someone else made
//! (`inspect::inspect`: the GPT, each partition's superblock probe for
//! ext2/3/4, btrfs, FAT, swap and ISO 9660, the UKI's `.cmdline` on the
//! ESP, GRUB's embedded config in the bios-boot partition, and the OEM
//! partition's files through `fatfs`, `ext4-view` and the btrfs reader),
//! written to a temp file. Any error is fine; a panic is not.
//!
//! Input: first byte odd: a structured disk: a valid GPT whose partitions
//! hold nothing, the input's bytes, or one of the FAT/ext4/btrfs images
//! the builder writes (labelled OEM, with the OEM files), with byte patches
//! over them; even: the rest is the image file.
#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;

use arbitrary::{Arbitrary, Unstructured};
use build_image_fuzz::gpt::{self, Part};
use build_image_fuzz::images;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Payload {
    Nothing,
    Bytes(Vec<u8>),
    /// One of [`images::all`] (modulo).
    Image(u8),
}

#[derive(Arbitrary, Debug)]
struct PartIn {
    part: Part,
    /// Keep the input's first/last LBA instead of laying partitions out.
    raw_extent: bool,
    /// Size in 512-byte blocks when the payload does not decide it.
    blocks: u16,
    payload: Payload,
    /// (offset in the payload, bytes): a corrupted image.
    patches: Vec<(u32, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    parts: Vec<PartIn>,
    entries: u8,
    tail_blocks: u16,
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let mut file = tempfile::Builder::new().prefix("fuzz-inspect").tempfile().expect("a temp file");
    if mode & 1 == 0 {
        file.write_all(rest).expect("writing the image");
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(i) = Input::arbitrary(&mut u) else { return };
        let imgs = images::all();
        let mut lba = 2048u64;
        let mut parts = Vec::new();
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        for p in i.parts.into_iter().take(4) {
            let start = lba * 512;
            let len = match &p.payload {
                Payload::Nothing => p.blocks as u64 * 512,
                Payload::Bytes(b) => {
                    writes.push((start, b.clone()));
                    (b.len() as u64).max(p.blocks as u64 * 512)
                }
                Payload::Image(k) => {
                    let img = &imgs[*k as usize % imgs.len()];
                    writes.extend(img.blocks.iter().map(|(o, b)| (start + o, b.clone())));
                    img.len
                }
            };
            let len = len.max(512).div_ceil(512) * 512;
            for (o, b) in p.patches.iter().take(16) {
                writes.push((start + (*o as u64 % len), b.iter().take(64).copied().collect()));
            }
            let mut part = p.part.clone();
            if !p.raw_extent {
                part.first_lba = lba;
                part.last_lba = lba + len / 512 - 1;
            }
            parts.push(part);
            lba += len / 512;
        }
        let disk_lbas = lba + 2048 + i.tail_blocks as u64;
        let mut regions = gpt::image(disk_lbas, 512, &parts, i.entries.max(4) as u32, [3; 16]);
        // Payloads first, the table over them.
        writes.append(&mut regions);
        let f = file.as_file();
        f.set_len(disk_lbas * 512).expect("sizing the image");
        for (o, b) in writes {
            let end = (o + b.len() as u64).min(disk_lbas * 512);
            if o < end {
                f.write_all_at(&b[..(end - o) as usize], o).expect("writing the image");
            }
        }
    }
    if let Ok(r) = build_image::inspect::inspect(file.path()) {
        let _ = r.render();
        let _ = serde_json::to_string(&r);
    }
});
