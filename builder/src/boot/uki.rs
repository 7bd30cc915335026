//! Unified kernel images, assembled as ukify does: systemd-stub with
//! `.osrel`, `.cmdline`, `.uname`, `.initrd` and `.linux` sections appended
//! after the stub's own, in ukify's order.
//!
//! Written here rather than with a PE crate: we only append section headers
//! into the room the stub leaves before its first section and patch four
//! optional-header fields; the PE crates on crates.io are readers (`object`,
//! `goblin`) or pull in signing machinery we do not need.
//!
//! Layout rules (the UKI specification and ukify): a new section's
//! `VirtualAddress` is the previous section's end rounded up to
//! `SectionAlignment`; its `PointerToRawData` is the file's end rounded up to
//! `FileAlignment`; `SizeOfRawData` is its length rounded up to
//! `FileAlignment`. `.linux`'s `VirtualSize` is at least the kernel's own
//! `SizeOfImage`, so the stub can run the kernel in place.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::tree::Content;

const SCN_CNT_CODE: u32 = 0x20;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x40;
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const SCN_MEM_READ: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("the EFI stub {origin} is not a PE32+ image: {msg}")]
    BadStub { origin: String, msg: String },
    #[error("the EFI stub {origin} has room for {room} more section headers; a UKI needs {need}")]
    NoRoom { origin: String, room: usize, need: usize },
    #[error("reading {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the UKI")]
    Write(#[source] std::io::Error),
}

/// One section to append.
pub struct Section<'a> {
    pub name: &'static str,
    pub data: SectionData<'a>,
}

pub enum SectionData<'a> {
    Bytes(&'a [u8]),
    Content(&'a Content),
}

impl SectionData<'_> {
    fn len(&self) -> u64 {
        match self {
            SectionData::Bytes(b) => b.len() as u64,
            SectionData::Content(c) => c.len(),
        }
    }
}

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn round_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// `SizeOfImage` of a PE image held in `c` (the kernel's EFI stub header),
/// or None when it is not a PE image.
pub fn pe_size_of_image(c: &Content) -> Option<u32> {
    let r = c.open().ok()?;
    let mut h = vec![0u8; 1024];
    r.read_exact_at(&mut h, 0).ok()?;
    let pe = u32at(&h, 0x3c) as usize;
    if &h[..2] != b"MZ" || pe + 24 + 64 > h.len() || &h[pe..pe + 4] != b"PE\0\0" {
        return None;
    }
    Some(u32at(&h, pe + 24 + 56))
}

/// Write `stub` plus `sections` as a UKI into `out`. Returns its length.
pub fn write(stub: &Content, stub_origin: &str, sections: &[Section<'_>], out: &File) -> Result<u64, UkiError> {
    let bad = |msg: &str| UkiError::BadStub { origin: stub_origin.into(), msg: msg.into() };
    let mut img = vec![0u8; stub.len() as usize];
    stub.open().and_then(|r| r.read_exact_at(&mut img, 0)).map_err(|source| UkiError::Read { what: stub_origin.into(), source })?;
    if img.len() < 0x40 || &img[..2] != b"MZ" {
        return Err(bad("no MZ header"));
    }
    let pe = u32at(&img, 0x3c) as usize;
    if pe + 24 > img.len() || &img[pe..pe + 4] != b"PE\0\0" {
        return Err(bad("no PE signature"));
    }
    let coff = pe + 4;
    let nsec = u16at(&img, coff + 2) as usize;
    let opt_size = u16at(&img, coff + 16) as usize;
    let oh = coff + 20;
    if u16at(&img, oh) != 0x20b {
        return Err(bad("not PE32+"));
    }
    let salign = u64::from(u32at(&img, oh + 32));
    let falign = u64::from(u32at(&img, oh + 36));
    let headers = u32at(&img, oh + 60) as usize;
    let table = oh + opt_size;
    let room = headers.saturating_sub(table + 40 * nsec) / 40;
    if room < sections.len() {
        return Err(UkiError::NoRoom { origin: stub_origin.into(), room, need: sections.len() });
    }
    let mut next_va = 0u64;
    let mut file_end = img.len() as u64;
    for i in 0..nsec {
        let s = table + 40 * i;
        let vsize = u64::from(u32at(&img, s + 8));
        let va = u64::from(u32at(&img, s + 12));
        let raw_size = u64::from(u32at(&img, s + 16));
        let raw_ptr = u64::from(u32at(&img, s + 20));
        next_va = next_va.max(va + vsize.max(raw_size));
        file_end = file_end.max(raw_ptr + raw_size);
    }
    next_va = round_up(next_va, salign);
    file_end = round_up(file_end, falign);
    let mut placed = Vec::new();
    let mut init_data = u64::from(u32at(&img, oh + 8));
    let mut code = u64::from(u32at(&img, oh + 4));
    for (k, sec) in sections.iter().enumerate() {
        let len = sec.data.len();
        let raw_size = round_up(len, falign);
        let mut vsize = len;
        let flags = if sec.name == ".linux" {
            if let SectionData::Content(c) = &sec.data {
                vsize = vsize.max(pe_size_of_image(c).map(u64::from).unwrap_or(0));
            }
            code += raw_size;
            SCN_CNT_CODE | SCN_MEM_READ | SCN_MEM_EXECUTE
        } else {
            init_data += raw_size;
            SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ
        };
        let h = table + 40 * (nsec + k);
        let mut name = [0u8; 8];
        name[..sec.name.len()].copy_from_slice(sec.name.as_bytes());
        img[h..h + 8].copy_from_slice(&name);
        let too_big = || bad("a section is larger than 4 GiB");
        put32(&mut img, h + 8, u32::try_from(vsize).map_err(|_| too_big())?);
        put32(&mut img, h + 12, u32::try_from(next_va).map_err(|_| too_big())?);
        put32(&mut img, h + 16, u32::try_from(raw_size).map_err(|_| too_big())?);
        put32(&mut img, h + 20, u32::try_from(file_end).map_err(|_| too_big())?);
        img[h + 24..h + 36].fill(0);
        put32(&mut img, h + 36, flags);
        placed.push((file_end, len));
        next_va = round_up(next_va + vsize, salign);
        file_end += raw_size;
    }
    img[coff + 2..coff + 4].copy_from_slice(&((nsec + sections.len()) as u16).to_le_bytes());
    put32(&mut img, oh + 4, code as u32);
    put32(&mut img, oh + 8, init_data as u32);
    put32(&mut img, oh + 56, next_va as u32);
    put32(&mut img, oh + 64, 0); // CheckSum
    out.set_len(file_end).map_err(UkiError::Write)?;
    out.write_all_at(&img, 0).map_err(UkiError::Write)?;
    // The padding between sections must read as zeros even on a reused file.
    let first = placed.first().map(|p| p.0).unwrap_or(file_end);
    out.write_all_at(&vec![0u8; (first - img.len() as u64) as usize], img.len() as u64).map_err(UkiError::Write)?;
    for (sec, (at, len)) in sections.iter().zip(&placed) {
        match &sec.data {
            SectionData::Bytes(b) => out.write_all_at(b, *at).map_err(UkiError::Write)?,
            SectionData::Content(c) => {
                let r = c.open().map_err(|source| UkiError::Read { what: c.origin(), source })?;
                r.copy_to(0, *len, out, *at).map_err(UkiError::Write)?;
            }
        }
        let pad = round_up(*len, falign) - len;
        out.write_all_at(&vec![0u8; pad as usize], at + len).map_err(UkiError::Write)?;
    }
    Ok(file_end)
}
