//! The boot disk's GPT as the agent reads it back: the primary header and
//! entry array (`gpt::parse_header`, `gpt::parse_entries`, as
//! `boot::disk_gpt` reads them for root=PARTUUID=), the first-boot grow
//! (`grow::grow_gpt` on an in-memory disk larger than the image), and the
//! superblock probes of the partitions (`probe::probe`, `grow::fs_bytes`,
//! `cloud::config_drive_fs`).
//!
//! Input: first byte odd: a structured GPT (valid CRCs, arbitrary
//! partitions and sizes) with byte patches on top; even: the rest is the
//! disk.
#![no_main]

use std::cell::RefCell;
use std::io;

use arbitrary::{Arbitrary, Unstructured};
use build_image_fuzz::gpt::{self, Part};
use guest_agent::grow::{self, Disk, Outcome};
use guest_agent::{cloud, gpt as agpt, probe};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    lbs_4k: bool,
    /// Disk size in blocks (image), and blocks added for the grow.
    disk_lbas: u16,
    extra_lbas: u16,
    entries: u8,
    parts: Vec<Part>,
    /// Which partition to grow (else a GUID of the input).
    grow: Option<u8>,
    other_guid: [u8; 16],
    patches: Vec<(u32, Vec<u8>)>,
}

struct Mem(RefCell<Vec<u8>>);

impl Disk for Mem {
    fn pread(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let d = self.0.borrow();
        let o = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let s = d.get(o..o.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(s);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut d = self.0.borrow_mut();
        let o = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::WriteZero))?;
        let s = d.get_mut(o..o.checked_add(buf.len()).ok_or(io::ErrorKind::WriteZero)?).ok_or(io::ErrorKind::WriteZero)?;
        s.copy_from_slice(buf);
        Ok(())
    }
    fn flush_disk(&self) -> io::Result<()> {
        Ok(())
    }
}

/// What boot::disk_gpt does with a disk.
fn read_table(disk: &[u8], lbs: usize) -> Option<Vec<agpt::Entry>> {
    let lba1 = disk.get(lbs..(2 * lbs).min(disk.len()))?;
    let hdr = agpt::parse_header(lba1).ok()?;
    let start = usize::try_from(hdr.entries_lba.checked_mul(lbs as u64)?).ok()?;
    let bytes = disk.get(start.min(disk.len())..start.saturating_add(hdr.entries_len()).min(disk.len()))?;
    agpt::parse_entries(&hdr, bytes).ok()
}

fn probes(b: &[u8]) {
    let _ = probe::probe(&b[..b.len().min(probe::PROBE_LEN)]);
    let _ = grow::fs_bytes(b);
    let _ = cloud::config_drive_fs(b);
    let _ = cloud::iso9660_label(b);
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        for lbs in [512usize, 4096] {
            if let Some(entries) = read_table(rest, lbs) {
                for e in entries {
                    let _ = (e.first_lba, e.last_lba);
                }
            }
            let disk = Mem(RefCell::new(rest.to_vec()));
            let _ = grow::grow_gpt(&disk, lbs as u64, rest.len() as u64, "00000000-0000-0000-0000-000000000000");
        }
        probes(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(i) = Input::arbitrary(&mut u) else { return };
    let lbs = if i.lbs_4k { 4096 } else { 512 };
    // At most 2 MiB of image and 2 MiB more disk.
    let lbas = (i.disk_lbas as u64).min((2 << 20) / lbs as u64);
    let extra = (i.extra_lbas as u64).min((2 << 20) / lbs as u64);
    let parts: Vec<Part> = i.parts.into_iter().take(8).collect();
    let regions = gpt::image(lbas, lbs, &parts, i.entries as u32, [7; 16]);
    let mut disk = gpt::flatten(&regions, ((lbas + extra) * lbs as u64) as usize);
    let len = disk.len();
    for (off, bytes) in i.patches.iter().take(8) {
        if len > 0 {
            let o = *off as usize % len;
            let n = bytes.len().min(len - o);
            disk[o..o + n].copy_from_slice(&bytes[..n]);
        }
    }
    let table = read_table(&disk, lbs);
    if let Some(entries) = &table {
        for e in entries.iter().take(4) {
            if let Some(s) = e.first_lba.checked_mul(lbs as u64).and_then(|s| usize::try_from(s).ok()).filter(|s| *s < len) {
                probes(&disk[s..]);
            }
        }
    }
    let guid = match (i.grow, &table) {
        (Some(k), Some(t)) if !t.is_empty() => t[k as usize % t.len()].part_guid.clone(),
        _ => agpt::guid_to_string(&i.other_guid),
    };
    let mem = Mem(RefCell::new(disk));
    if let Ok(Outcome::Grown { number, new_last_lba, old_last_lba, .. }) = grow::grow_gpt(&mem, lbs as u64, len as u64, &guid) {
        assert!(new_last_lba >= old_last_lba);
        // The grown table reads back, with the partition's new end.
        let after = read_table(&mem.0.borrow(), lbs).expect("the grown GPT reads back");
        let p = after.iter().find(|e| e.number == number).expect("the grown partition is still there");
        assert_eq!(p.last_lba, new_last_lba);
    }
});
