//! GRUB for BIOS (`i386-pc`) on GPT disks, assembled and installed without
//! any host tool: this module does in Rust what `grub-mkimage -O i386-pc`
//! and `grub-bios-setup` do, from the unmodified files of Debian's
//! `grub-pc-bin` package (`/usr/lib/grub/i386-pc`).
//!
//! # Why our own
//! `grub-install` needs root, a real block device, the host's GRUB version
//! and probes the running system; its output also embeds host-dependent
//! choices. We only need a handful of well-documented byte layouts, so we
//! write them ourselves: no privileges, no host tools, the same bytes for the
//! same inputs. The layouts below were learnt from GRUB's public headers
//! and documentation (`include/grub/offsets.h`, `include/grub/kernel.h`,
//! `include/grub/i386/pc/boot.h`, the comments of `diskboot.S` and
//! `startup_raw.S`); no GRUB code is copied here. GRUB itself (the `.img` and
//! `.mod` files) is taken as opaque input data, exactly as `grub-mkimage`
//! takes it.
//!
//! # The boot chain and what we write
//! ```text
//! LBA 0          boot.img (446 bytes of code) + the protective MBR's table
//!                  0x5C u64  LBA of core.img's first sector
//!                  0x64 u8   boot drive 0xFF (use the drive the BIOS gave)
//!                  0x66 2 B  0x90 0x90: skip the floppy/HDD drive check
//! bios-boot      core.img:
//!   sector 0       diskboot.img; its blocklist {u64 start, u16 len,
//!                  u16 segment} sits at 0x1F4 and grows downwards, ended by
//!                  an all-zero entry. We use one entry: start = first LBA + 1,
//!                  len = sectors − 1, segment 0x820 (= 0x8200 linear).
//!   sector 1…      lzma_decompress.img, with
//!                    0x08 u32  compressed payload size
//!                    0x0C u32  uncompressed payload size
//!                    0x10 u32  Reed-Solomon redundancy (0: none)
//!                  then the raw LZMA stream (no header; the decompressor's
//!                  properties are fixed at lc=3, lp=0, pb=2) of the payload:
//!     payload        kernel.img's PROGBITS sections laid out at their link
//!                    addresses minus 0x9000 (it is an ELF linked at 0x9000),
//!                    then the module area:
//!                      grub_module_info32 {magic "gmim", offset 12, size}
//!                      per module {u32 type, u32 size incl. this header} +
//!                      data padded to 4 bytes: every .mod (type 0, ELF), in
//!                      dependency order (a module's dependencies first),
//!                      then the config (type 2, NUL-terminated), then the
//!                      prefix (type 3, NUL-terminated).
//! ```
//! At boot GRUB's kernel loads the embedded modules, sets `prefix`, runs the
//! embedded config with its rescue-mode parser (one command a line), and only
//! then tries `normal` mode from `prefix`. Our config boots Linux straight
//! from the ESP, so nothing else is read.
//!
//! Determinism: the payload is a pure function of the input files, the module
//! list, the prefix and the config; LZMA is liblzma's raw LZMA1 encoder with
//! fixed options, single-threaded, built from the vendored source (the
//! workspace enables `xz2/static`), so the compressed bytes do not depend on
//! the host's liblzma.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::disk::{Region, RegionError};
use crate::tree::{Kind, LayerError, Tree};

/// Where `grub-pc-bin` installs the i386-pc files.
pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";

/// The modules [`boot_config`]'s commands need: disk access through the
/// BIOS, GPT, FAT, the serial console and terminal switching, and the Linux
/// loader (which pulls in `normal`, `relocator`, `mmap`, `video`, … as its
/// dependencies in `moddep.lst`).
pub const BOOT_MODULES: &[&str] = &["biosdisk", "part_gpt", "fat", "serial", "terminal", "linux"];

const SECTOR: usize = 512;
/// `GRUB_KERNEL_I386_PC_LINK_ADDR`: where the kernel runs.
const LINK_ADDR: u32 = 0x9000;
/// `GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20`: where diskboot loads sector 1 on.
const LOAD_SEGMENT: u16 = 0x820;
/// Lowest address core.img must stay below (`0x78000`), as grub-mkimage
/// and grub-bios-setup check.
const CORE_LIMIT: u32 = 0x78000;
/// The decompressed kernel plus its bss must stay below this address.
const KERNEL_LIMIT: u32 = 0x68000;
/// The decompressor runs from 0x8200 and the kernel is linked at 0x9000.
const MAX_DECOMPRESSOR: usize = (LINK_ADDR - 0x8200) as usize;
/// Offsets in lzma_decompress.img (`GRUB_DECOMPRESSOR_I386_PC_*`,
/// `GRUB_KERNEL_I386_PC_*`).
const DEC_COMPRESSED_SIZE: usize = 0x08;
const DEC_UNCOMPRESSED_SIZE: usize = 0x0C;
const DEC_RS_REDUNDANCY: usize = 0x10;
const DEC_NO_RS_LENGTH: usize = 0x14;
/// Offsets in boot.img (`GRUB_BOOT_MACHINE_*`).
const BOOT_BPB: std::ops::Range<usize> = 0x03..0x5A;
const BOOT_KERNEL_SECTOR: usize = 0x5C;
const BOOT_DRIVE: usize = 0x64;
const BOOT_DRIVE_CHECK: usize = 0x66;
const BOOT_MBR_TAIL: std::ops::Range<usize> = 0x1B8..0x1FE;
/// One blocklist entry of diskboot.img: u64 start, u16 len, u16 segment.
const BLOCKLIST_ENTRY: usize = 12;
const FIRST_BLOCKLIST: usize = SECTOR - BLOCKLIST_ENTRY;

/// Module area object types (`OBJ_TYPE_*` in `include/grub/kernel.h`).
const OBJ_TYPE_ELF: u32 = 0;
const OBJ_TYPE_CONFIG: u32 = 2;
const OBJ_TYPE_PREFIX: u32 = 3;
/// "gmim", `GRUB_MODULE_MAGIC`.
const MODULE_MAGIC: u32 = 0x676d_696d;
/// `sizeof (struct grub_module_info32)`.
const MODULE_INFO_SIZE: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("{origin}: `{file}` is missing: give the i386-pc folder of grub-pc-bin (/usr/lib/grub/i386-pc)")]
    Missing { origin: String, file: String },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the GRUB package {}", deb.display())]
    Deb {
        deb: PathBuf,
        #[source]
        source: LayerError,
    },
    #[error("{origin}: {file}: {msg}")]
    BadFile { origin: String, file: String, msg: String },
    #[error("GRUB module `{module}` (asked for, or needed by another module) is not in {origin}: check the name against moddep.lst")]
    UnknownModule { origin: String, module: String },
    #[error("the {what} contains a NUL byte: GRUB reads it as a C string")]
    Nul { what: &'static str },
    #[error("compressing the GRUB core image with LZMA")]
    Compress(#[source] std::io::Error),
    #[error("the GRUB {what} is too big: {size:#x} bytes, the limit is {limit:#x}: embed fewer modules")]
    TooBig { what: &'static str, size: u64, limit: u64 },
    #[error("the GRUB core image needs {need_bytes} bytes ({need_sectors} sectors of 512), but the bios-boot partition has {have_bytes} bytes: make the bios-boot partition at least {need_bytes} bytes (1MiB is usual)")]
    DoesNotFit { need_bytes: u64, need_sectors: u64, have_bytes: u64 },
    #[error("bios-boot partition at byte {offset} of size {size}: {msg}")]
    BadPartition { offset: u64, size: u64, msg: String },
    #[error("the core image is not one from core_image(): {msg}")]
    BadCore { msg: String },
    #[error("BIOS boot with GRUB needs a partition of type \"{kind}\" in disk.partitions ({why})")]
    NoPartition { kind: &'static str, why: &'static str },
    #[error(transparent)]
    Region(#[from] RegionError),
}

/// The GRUB i386-pc files that core images are made of, held in memory
/// (about 3.5 MiB for the whole of grub-pc-bin's folder).
#[derive(Debug, Clone)]
pub struct GrubFiles {
    /// Where the files came from, for messages.
    origin: String,
    boot_img: Vec<u8>,
    diskboot_img: Vec<u8>,
    lzma_decompress_img: Vec<u8>,
    kernel_img: Vec<u8>,
    /// module → its dependencies, in `moddep.lst` order.
    moddep: BTreeMap<String, Vec<String>>,
    /// module name (without `.mod`) → ELF bytes.
    modules: BTreeMap<String, Vec<u8>>,
}

impl GrubFiles {
    /// From file names (`boot.img`, `kernel.img`, `fat.mod`, `moddep.lst`, …)
    /// and their bytes; other names are ignored. `origin` labels errors.
    pub fn from_files(origin: &str, files: BTreeMap<String, Vec<u8>>) -> Result<GrubFiles, GrubError> {
        let mut files = files;
        let mut take =
            |name: &str| files.remove(name).ok_or_else(|| GrubError::Missing { origin: origin.to_string(), file: name.to_string() });
        let boot_img = take("boot.img")?;
        let diskboot_img = take("diskboot.img")?;
        let lzma_decompress_img = take("lzma_decompress.img")?;
        let kernel_img = take("kernel.img")?;
        let moddep_lst = take("moddep.lst")?;
        let bad = |file: &str, msg: String| GrubError::BadFile { origin: origin.to_string(), file: file.to_string(), msg };
        if boot_img.len() != SECTOR {
            return Err(bad("boot.img", format!("is {} bytes, expected {SECTOR}", boot_img.len())));
        }
        if diskboot_img.len() != SECTOR {
            return Err(bad("diskboot.img", format!("is {} bytes, expected {SECTOR}", diskboot_img.len())));
        }
        if le16(&diskboot_img, SECTOR - 2) != LOAD_SEGMENT {
            return Err(bad(
                "diskboot.img",
                format!("its blocklist does not load at segment {LOAD_SEGMENT:#x}: not an i386-pc diskboot.img"),
            ));
        }
        if lzma_decompress_img.len() < 0x20 || lzma_decompress_img.len() > MAX_DECOMPRESSOR {
            return Err(bad(
                "lzma_decompress.img",
                format!("is {} bytes; it must hold its header and fit below {LINK_ADDR:#x}", lzma_decompress_img.len()),
            ));
        }
        if le16(&lzma_decompress_img, DEC_NO_RS_LENGTH) == 0xFFFF {
            return Err(bad("lzma_decompress.img", "its header marks a version mismatch (no-RS length 0xFFFF)".into()));
        }
        let moddep_text = String::from_utf8(moddep_lst).map_err(|_| bad("moddep.lst", "is not UTF-8".into()))?;
        let mut moddep = BTreeMap::new();
        for (n, line) in moddep_text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((name, deps)) = line.split_once(':') else {
                return Err(bad("moddep.lst", format!("line {}: no `:`", n + 1)));
            };
            // A later line for the same module wins, as in grub-mkimage.
            moddep.insert(name.trim().to_string(), deps.split_whitespace().map(str::to_string).collect());
        }
        let modules = files.into_iter().filter_map(|(name, data)| name.strip_suffix(".mod").map(|m| (m.to_string(), data))).collect();
        Ok(GrubFiles { origin: origin.to_string(), boot_img, diskboot_img, lzma_decompress_img, kernel_img, moddep, modules })
    }

    /// From a folder on the host, e.g. `/usr/lib/grub/i386-pc`.
    pub fn from_dir(dir: &Path) -> Result<GrubFiles, GrubError> {
        let read_err = |path: &Path, source| GrubError::Read { path: path.to_path_buf(), source };
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let e = e.map_err(|e| read_err(dir, e))?;
            if let Some(name) = e.file_name().to_str() {
                if is_wanted(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        let mut files = BTreeMap::new();
        for name in names {
            let path = dir.join(&name);
            files.insert(name, std::fs::read(&path).map_err(|e| read_err(&path, e))?);
        }
        GrubFiles::from_files(&dir.display().to_string(), files)
    }

    /// From a folder of a [`Tree`] (`dir` such as [`I386_PC_DIR`]).
    pub fn from_tree(tree: &Tree, dir: &str) -> Result<GrubFiles, GrubError> {
        let origin = format!("tree folder {dir}");
        let missing = || GrubError::Missing { origin: origin.clone(), file: dir.to_string() };
        let id = tree.find(dir.as_bytes()).ok_or_else(missing)?;
        let Kind::Dir(children) = &tree.inode(id).kind else { return Err(missing()) };
        let mut files = BTreeMap::new();
        for (name, &child) in children {
            let Ok(name) = std::str::from_utf8(name) else { continue };
            let Kind::File(content) = &tree.inode(child).kind else { continue };
            if !is_wanted(name) {
                continue;
            }
            let path = PathBuf::from(format!("{dir}/{name}"));
            let read_err = |source| GrubError::Read { path: path.clone(), source };
            let reader = content.open().map_err(read_err)?;
            let mut buf = vec![0u8; content.len() as usize];
            reader.read_exact_at(&mut buf, 0).map_err(read_err)?;
            files.insert(name.to_string(), buf);
        }
        GrubFiles::from_files(&origin, files)
    }

    /// From the `grub-pc-bin` Debian package itself (no dpkg needed); its
    /// data is decompressed into an unnamed spool file in `spool_dir`.
    pub fn from_deb(deb: &Path, spool_dir: &Path) -> Result<GrubFiles, GrubError> {
        let mut tree = Tree::new(0);
        crate::tree::tar::apply_deb(&mut tree, deb, "/", spool_dir).map_err(|source| GrubError::Deb { deb: deb.to_path_buf(), source })?;
        let mut files = GrubFiles::from_tree(&tree, I386_PC_DIR)?;
        files.origin = format!("{} ({I386_PC_DIR})", deb.display());
        Ok(files)
    }

    /// Names of the available modules, sorted.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    /// `modules` plus everything they depend on, dependencies first: the
    /// order in which GRUB's kernel must load them.
    pub fn resolve(&self, modules: &[&str]) -> Result<Vec<String>, GrubError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for m in modules {
            self.visit(m.strip_suffix(".mod").unwrap_or(m), &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, m: &str, done: &mut BTreeSet<String>, path: &mut BTreeSet<String>, order: &mut Vec<String>) -> Result<(), GrubError> {
        if done.contains(m) {
            return Ok(());
        }
        if !self.modules.contains_key(m) {
            return Err(GrubError::UnknownModule { origin: self.origin.clone(), module: m.to_string() });
        }
        if !path.insert(m.to_string()) {
            return Err(GrubError::BadFile {
                origin: self.origin.clone(),
                file: "moddep.lst".into(),
                msg: format!("dependency cycle through `{m}`"),
            });
        }
        // grub-mkimage walks a module's dependencies last-listed first; we
        // do the same so that the module order matches its output.
        for d in self.moddep.get(m).into_iter().flatten().rev() {
            self.visit(d, done, path, order)?;
        }
        path.remove(m);
        done.insert(m.to_string());
        order.push(m.to_string());
        Ok(())
    }

    fn bad(&self, file: &str, msg: impl Into<String>) -> GrubError {
        GrubError::BadFile { origin: self.origin.clone(), file: file.to_string(), msg: msg.into() }
    }
}

fn is_wanted(name: &str) -> bool {
    name.ends_with(".mod") || name.ends_with(".img") || name == "moddep.lst"
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The kernel as GRUB runs it: its loadable sections at their addresses
/// relative to the link address, and the size of its bss beyond that.
struct KernelLayout {
    image: Vec<u8>,
    bss_size: u32,
}

/// Lay out kernel.img (a 32-bit ELF executable linked at 0x9000) as a flat
/// image: code sections, then data sections, each at `sh_addr - 0x9000`;
/// the image ends where the last of them ends (bss is not included).
fn load_kernel(files: &GrubFiles) -> Result<KernelLayout, GrubError> {
    let k = &files.kernel_img;
    let bad = |msg: String| files.bad("kernel.img", msg);
    if k.len() < 52 || &k[..4] != b"\x7fELF" || k[4] != 1 || k[5] != 1 || le16(k, 18) != 3 {
        return Err(bad("not a 32-bit little-endian i386 ELF file".into()));
    }
    let shoff = le32(k, 0x20) as usize;
    let shentsize = le16(k, 0x2E) as usize;
    let shnum = le16(k, 0x30) as usize;
    if shentsize < 40 || shoff.checked_add(shentsize * shnum).is_none_or(|end| end > k.len()) {
        return Err(bad("section headers lie outside the file".into()));
    }
    const SHT_PROGBITS: u32 = 1;
    const SHT_NOBITS: u32 = 8;
    const SHF_ALLOC: u32 = 2;
    const SHF_EXECINSTR: u32 = 4;
    struct Sec {
        typ: u32,
        flags: u32,
        addr: u32,
        offset: u32,
        size: u32,
    }
    let secs: Vec<Sec> = (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            Sec { typ: le32(k, h + 4), flags: le32(k, h + 8), addr: le32(k, h + 12), offset: le32(k, h + 16), size: le32(k, h + 20) }
        })
        .collect();
    let is_text = |s: &Sec| s.typ == SHT_PROGBITS && s.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR;
    let is_data = |s: &Sec| s.typ == SHT_PROGBITS && s.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC;
    let text: Vec<&Sec> = secs.iter().filter(|s| is_text(s)).collect();
    let data: Vec<&Sec> = secs.iter().filter(|s| is_data(s)).collect();
    if text.first().map(|s| s.addr) != Some(LINK_ADDR) {
        return Err(bad(format!("its code does not start at the link address {LINK_ADDR:#x}: not an i386-pc kernel.img")));
    }
    let mut placed = Vec::new();
    let mut size = 0u32;
    for s in text.iter().chain(&data) {
        let rel = s.addr.checked_sub(LINK_ADDR).ok_or_else(|| bad(format!("a section at {:#x} lies below the link address", s.addr)))?;
        let end = rel.checked_add(s.size).ok_or_else(|| bad("section size overflows".into()))?;
        if (s.offset as usize).checked_add(s.size as usize).is_none_or(|e| e > k.len()) {
            return Err(bad(format!("a section at {:#x} lies outside the file", s.addr)));
        }
        placed.push((rel as usize, s.offset as usize, s.size as usize));
        size = end;
    }
    let mut image = vec![0u8; size as usize];
    for (rel, off, len) in placed {
        if rel + len > image.len() {
            return Err(bad("sections are not in address order".into()));
        }
        image[rel..rel + len].copy_from_slice(&k[off..off + len]);
    }
    let mut bss_end = size;
    for s in secs.iter().filter(|s| s.typ == SHT_NOBITS && s.flags & SHF_ALLOC != 0) {
        bss_end = bss_end.max(s.addr.saturating_sub(LINK_ADDR).saturating_add(s.size));
    }
    Ok(KernelLayout { image, bss_size: bss_end - size })
}

/// Append one module-area object: header {type, size incl. header} + data,
/// padded with zeros to 4 bytes.
fn push_object(area: &mut Vec<u8>, typ: u32, data: &[u8], padded_len: usize) {
    area.extend_from_slice(&typ.to_le_bytes());
    area.extend_from_slice(&((padded_len + 8) as u32).to_le_bytes());
    area.extend_from_slice(data);
    area.resize(area.len() + padded_len - data.len(), 0);
}

/// The uncompressed payload: kernel, then the module area.
fn payload(files: &GrubFiles, modules: &[&str], prefix: &str, config: &str) -> Result<Vec<u8>, GrubError> {
    if prefix.contains('\0') {
        return Err(GrubError::Nul { what: "prefix" });
    }
    if config.contains('\0') {
        return Err(GrubError::Nul { what: "embedded config" });
    }
    let kernel = load_kernel(files)?;
    let order = files.resolve(modules)?;
    let mut area = Vec::new();
    area.extend_from_slice(&[0u8; MODULE_INFO_SIZE]);
    for m in &order {
        let data = &files.modules[m];
        push_object(&mut area, OBJ_TYPE_ELF, data, align4(data.len()));
    }
    // Config and prefix are C strings: the NUL is part of them.
    push_object(&mut area, OBJ_TYPE_CONFIG, config.as_bytes(), align4(config.len() + 1));
    push_object(&mut area, OBJ_TYPE_PREFIX, prefix.as_bytes(), align4(prefix.len() + 1));
    let total = u32::try_from(area.len()).map_err(|_| GrubError::TooBig {
        what: "module area",
        size: area.len() as u64,
        limit: u32::MAX as u64,
    })?;
    put32(&mut area, 0, MODULE_MAGIC);
    put32(&mut area, 4, MODULE_INFO_SIZE as u32);
    put32(&mut area, 8, total);
    let mut out = kernel.image;
    let kernel_end = LINK_ADDR as u64 + out.len() as u64 + kernel.bss_size as u64;
    if kernel_end > KERNEL_LIMIT as u64 {
        return Err(GrubError::TooBig { what: "kernel with its bss", size: kernel_end, limit: KERNEL_LIMIT as u64 });
    }
    out.extend_from_slice(&area);
    Ok(out)
}

/// Raw LZMA1 (no header, no size): what GRUB's i386-pc decompressor reads,
/// with its fixed properties lc=3, lp=0, pb=2. liblzma (through `xz2`) offers
/// the `.lzma` "alone" format, which is exactly a 13-byte header (properties
/// byte, u32 dictionary size, u64 uncompressed size) followed by the raw
/// stream: we check that header and drop it. The stream ends with an
/// end-of-payload marker, which GRUB never reaches: it stops decoding at the
/// uncompressed size written in the decompressor's header.
fn lzma_raw(data: &[u8]) -> Result<Vec<u8>, GrubError> {
    use xz2::stream::{Action, LzmaOptions, Status, Stream};
    let err = |e: xz2::stream::Error| GrubError::Compress(std::io::Error::other(e));
    const DICT: u32 = 1 << 20;
    let mut opts = LzmaOptions::new_preset(9).map_err(err)?;
    opts.literal_context_bits(3).literal_position_bits(0).position_bits(2).dict_size(DICT);
    let mut stream = Stream::new_lzma_encoder(&opts).map_err(err)?;
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(64 << 10);
        }
        let before = stream.total_in();
        let status = stream.process_vec(input, &mut out, Action::Finish).map_err(err)?;
        input = &input[(stream.total_in() - before) as usize..];
        if status == Status::StreamEnd {
            break;
        }
    }
    // Properties byte (pb * 5 + lp) * 9 + lc = 0x5D for lc=3, lp=0, pb=2.
    let mut header = [0u8; 13];
    header[0] = 0x5D;
    header[1..5].copy_from_slice(&DICT.to_le_bytes());
    header[5..13].fill(0xFF);
    if out.len() < 13 || out[..13] != header {
        return Err(GrubError::Compress(std::io::Error::other(format!(
            "liblzma wrote an unexpected .lzma header {:02x?}",
            &out[..out.len().min(13)]
        ))));
    }
    out.drain(..13);
    Ok(out)
}

/// Build core.img as `grub-mkimage -O i386-pc -p PREFIX -c CONFIG MODULES…`
/// does: `diskboot.img` + patched `lzma_decompress.img` + the LZMA-compressed
/// kernel and module area. The same inputs always give the same bytes.
pub fn core_image(files: &GrubFiles, modules: &[&str], prefix: &str, embedded_config: &str) -> Result<Vec<u8>, GrubError> {
    let payload = payload(files, modules, prefix, embedded_config)?;
    let compressed = lzma_raw(&payload)?;
    let mut dec = files.lzma_decompress_img.clone();
    put32(&mut dec, DEC_COMPRESSED_SIZE, compressed.len() as u32);
    put32(&mut dec, DEC_UNCOMPRESSED_SIZE, payload.len() as u32);
    put32(&mut dec, DEC_RS_REDUNDANCY, 0);
    let body = dec.len() + compressed.len();
    if LINK_ADDR as u64 + body as u64 > CORE_LIMIT as u64 {
        return Err(GrubError::TooBig { what: "core image", size: LINK_ADDR as u64 + body as u64, limit: CORE_LIMIT as u64 });
    }
    let mut diskboot = files.diskboot_img.clone();
    // The blocklist's length in sectors; install() fills in the start.
    let sectors = body.div_ceil(SECTOR) as u16;
    diskboot[FIRST_BLOCKLIST + 8..FIRST_BLOCKLIST + 10].copy_from_slice(&sectors.to_le_bytes());
    let mut core = Vec::with_capacity(SECTOR + body);
    core.extend_from_slice(&diskboot);
    core.extend_from_slice(&dec);
    core.extend_from_slice(&compressed);
    Ok(core)
}

/// The uncompressed payload (kernel + module area) of a core image built
/// from `files`, read back through its decompressor header: for inspection
/// and for comparing with other tools' core images.
pub fn unpack_core(files: &GrubFiles, core: &[u8]) -> Result<Vec<u8>, GrubError> {
    let dec_len = files.lzma_decompress_img.len();
    let bad = |msg: String| GrubError::BadCore { msg };
    if core.len() < SECTOR + dec_len {
        return Err(bad(format!("{} bytes is shorter than diskboot.img and the decompressor", core.len())));
    }
    let dec = &core[SECTOR..SECTOR + dec_len];
    let csize = le32(dec, DEC_COMPRESSED_SIZE) as usize;
    let plain_len = le32(dec, DEC_UNCOMPRESSED_SIZE) as u64;
    // GRUB decompresses below 16 MiB; anything larger is not a core image.
    if plain_len > 16 << 20 {
        return Err(bad(format!("its header announces {plain_len} uncompressed bytes")));
    }
    let data = core
        .get(SECTOR + dec_len..SECTOR + dec_len + csize)
        .ok_or_else(|| bad(format!("the compressed size {csize} reaches past its end")))?;
    decode_payload(data, plain_len as usize).map_err(bad)
}

/// Decode exactly `plain_len` bytes of a raw LZMA1 stream with GRUB's
/// properties (lc=3, lp=0, pb=2, 1 MiB dictionary).
fn decode_payload(data: &[u8], plain_len: usize) -> Result<Vec<u8>, String> {
    use xz2::stream::{Action, Status, Stream};
    // Rebuild a .lzma header (size unknown: GRUB's own streams have no
    // end marker, ours have one) and decode exactly the announced size.
    let mut lz = Vec::with_capacity(13 + data.len());
    lz.push(0x5D);
    lz.extend_from_slice(&(1u32 << 20).to_le_bytes());
    lz.extend_from_slice(&[0xFF; 8]);
    lz.extend_from_slice(data);
    let err = |e: xz2::stream::Error| format!("the LZMA stream does not decode: {e}");
    let mut stream = Stream::new_lzma_decoder(u64::MAX).map_err(err)?;
    let mut out = vec![0u8; plain_len];
    let mut input = &lz[..];
    let mut pos = 0usize;
    while pos < out.len() {
        let (in_before, out_before) = (stream.total_in(), stream.total_out());
        let status = stream.process(input, &mut out[pos..], Action::Run).map_err(err)?;
        input = &input[(stream.total_in() - in_before) as usize..];
        pos += (stream.total_out() - out_before) as usize;
        if status == Status::StreamEnd || (stream.total_in() == in_before && stream.total_out() == out_before) {
            break;
        }
    }
    if pos != out.len() {
        return Err(format!("the LZMA stream ends after {pos} of {plain_len} bytes"));
    }
    Ok(out)
}

/// The module area of a decoded payload: the last `grub_module_info32`
/// whose size reaches exactly to the payload's end.
fn module_area(payload: &[u8]) -> Option<&[u8]> {
    let magic = MODULE_MAGIC.to_le_bytes();
    (0..payload.len().saturating_sub(MODULE_INFO_SIZE - 1)).rev().find_map(|k| {
        let m = &payload[k..];
        (m[..4] == magic && le32(m, 4) as usize == MODULE_INFO_SIZE && le32(m, 8) as usize == m.len()).then_some(m)
    })
}

/// The embedded config of the GRUB core image installed in the bios-boot
/// partition at `offset` (`size` bytes) of `disk`, read back without the
/// GRUB files it was made from: sector 0 is diskboot.img, whose blocklist
/// says where the rest lies; the decompressor's header gives the sizes of
/// the LZMA stream, but not where it starts (right after the decompressor,
/// whose length depends on the GRUB version). The start is found by trying
/// the offsets that can hold it: a raw LZMA stream begins with a zero byte,
/// and, without Reed-Solomon redundancy, the stream ends in the last sector
/// of the blocklist. A start is right when the stream decodes to the
/// announced size and ends with a module area that holds exactly the rest
/// of it. `Ok(None)` when the partition holds no i386-pc core image.
pub fn read_config(disk: &std::fs::File, offset: u64, size: u64) -> Result<Option<String>, GrubError> {
    use std::os::unix::fs::FileExt;
    let bad = |msg: String| GrubError::BadCore { msg };
    let read = |at: u64, len: usize| -> Result<Vec<u8>, GrubError> {
        let mut b = vec![0u8; len];
        disk.read_exact_at(&mut b, at).map_err(|source| GrubError::Read { path: PathBuf::from("the image"), source })?;
        Ok(b)
    };
    if size < SECTOR as u64 {
        return Ok(None);
    }
    let first = read(offset, SECTOR)?;
    if le16(&first, SECTOR - 2) != LOAD_SEGMENT || le16(&first, FIRST_BLOCKLIST + 8) == 0 {
        return Ok(None);
    }
    let start = u64::from_le_bytes(first[FIRST_BLOCKLIST..FIRST_BLOCKLIST + 8].try_into().expect("8 bytes"));
    let sectors = le16(&first, FIRST_BLOCKLIST + 8) as usize;
    let limit = (CORE_LIMIT - LINK_ADDR) as usize / SECTOR + 1;
    if sectors > limit {
        return Err(bad(format!("its blocklist names {sectors} sectors; a core image has at most {limit}")));
    }
    let body = read(start * SECTOR as u64, sectors * SECTOR)?;
    let csize = le32(&body, DEC_COMPRESSED_SIZE) as usize;
    let plain_len = le32(&body, DEC_UNCOMPRESSED_SIZE) as usize;
    if plain_len > 16 << 20 || csize == 0 || csize > body.len() {
        return Err(bad(format!(
            "its decompressor header announces {csize} compressed and {plain_len} uncompressed bytes in {} bytes",
            body.len()
        )));
    }
    let last = MAX_DECOMPRESSOR.min(body.len() - csize);
    let lowest_end = if le32(&body, DEC_RS_REDUNDANCY) == 0 { body.len().saturating_sub(SECTOR - 1) } else { 0 };
    let payload = (0x20..=last)
        .filter(|s| body[*s] == 0 && s + csize >= lowest_end)
        .find_map(|s| decode_payload(&body[s..s + csize], plain_len).ok().filter(|p| module_area(p).is_some()))
        .ok_or_else(|| bad("no LZMA stream after its decompressor decodes to a kernel and module area".into()))?;
    let area = module_area(&payload).expect("checked");
    let mut at = MODULE_INFO_SIZE;
    while at + 8 <= area.len() {
        let (typ, len) = (le32(area, at), le32(area, at + 4) as usize);
        if len < 8 || at + len > area.len() {
            return Err(bad(format!("module area object at {at} has size {len}")));
        }
        if typ == OBJ_TYPE_CONFIG {
            let data = &area[at + 8..at + len];
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
            return Ok(Some(String::from_utf8_lossy(&data[..end]).into_owned()));
        }
        at += len;
    }
    Ok(Some(String::new()))
}

/// Split one line of a GRUB script into words as GRUB's parser does for the
/// lines [`boot_config`] writes: whitespace separates words, `'…'` is
/// literal, `"…"` keeps all but `\"`, `\\` and `\$` escapes, and a
/// backslash outside quotes takes the next character literally. (`$name`
/// is not expanded: our configs quote every `$`.)
fn grub_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\'' => {
                any = true;
                for c in it.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                any = true;
                while let Some(c) = it.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(it.peek(), Some('"' | '\\' | '$')) => cur.push(it.next().expect("peeked")),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                any = true;
                if let Some(c) = it.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// The kernel command line GRUB's Linux loader makes of a config's first
/// `linux FILE ARGS…` line: `BOOT_IMAGE=FILE` and the arguments, each with
/// `\`, `'` and `"` backslash-escaped and wrapped in double quotes when it
/// holds a space, joined by spaces (`grub_create_loader_cmdline`). `None`
/// without a `linux` line.
pub fn linux_cmdline(config: &str) -> Option<String> {
    let words = config.lines().map(grub_words).find(|w| w.first().map(String::as_str) == Some("linux"))?;
    let args: Vec<String> = words[1..]
        .iter()
        .map(|a| {
            let mut s = String::new();
            let space = a.contains(' ');
            if space {
                s.push('"');
            }
            for c in a.chars() {
                if matches!(c, '\\' | '\'' | '"') {
                    s.push('\\');
                }
                s.push(c);
            }
            if space {
                s.push('"');
            }
            s
        })
        .collect();
    Some(format!("BOOT_IMAGE={}", args.join(" ")))
}

/// Quote one word for GRUB's command-line splitter: plain words stay as they
/// are, anything else is single-quoted (a `'` inside becomes `'\''`), so `$`,
/// `;`, spaces, quotes and backslashes reach GRUB's `linux` command as one
/// unchanged argument.
fn grub_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./=,:+@%^~".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Split a kernel command line the way the kernel does: at whitespace
/// outside double quotes; the quotes themselves are dropped (GRUB's Linux
/// loader puts an argument that contains a space back in double quotes).
fn kernel_args(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(cur);
    }
    args
}

/// The prefix to build core images with: `/boot/grub` on GPT partition
/// `esp_partition` of the disk the BIOS booted from (GRUB fills in the drive
/// of a prefix that starts with `(,`, as grub-install's prefixes do).
pub fn prefix(esp_partition: u32) -> String {
    format!("(,gpt{esp_partition})/boot/grub")
}

/// The embedded config that boots Linux from the ESP: serial console on
/// COM1 at 115200 baud (and the screen), `root` = GPT partition
/// `esp_partition` of `hd0` (BIOSes, SeaBIOS included, number the disk they
/// boot from 0x80, which is GRUB's `hd0`; `(${cmddevice},gptN)` was tried
/// and expanded to `(,gptN)` in the embedded config under GRUB 2.06), then
/// `/boot/vmlinuz` with `cmdline` and `/boot/initrd.img`.
/// Rescue-mode syntax: one command a line. Needs [`BOOT_MODULES`].
///
/// `cmdline` is in the kernel's syntax (`a=1 b="two words"`); each argument
/// is quoted for GRUB's parser so that `$`, `;` and spaces arrive unchanged.
/// GRUB's Linux loader itself backslash-escapes `\`, `'` and `"` inside an
/// argument, so those characters do not reach the kernel verbatim.
pub fn boot_config(esp_partition: u32, cmdline: &str) -> String {
    let mut linux = String::from("linux /boot/vmlinuz");
    for a in kernel_args(cmdline) {
        linux.push(' ');
        linux.push_str(&grub_quote(&a));
    }
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set root=(hd0,gpt{esp_partition})\n\
         {linux}\n\
         initrd /boot/initrd.img\n\
         boot\n"
    )
}

/// Install GRUB for BIOS boot on a GPT disk: `core` (from [`core_image`])
/// into the bios-boot partition at `bios_boot_offset` (bytes from the start
/// of `disk`, a region covering the whole disk), its blocklist pointing at
/// itself, and boot.img into sector 0, keeping sector 0's partition table
/// (the protective MBR), disk signature and BPB area.
pub fn install(disk: Region<'_>, files: &GrubFiles, core: &[u8], bios_boot_offset: u64, bios_boot_size: u64) -> Result<(), GrubError> {
    let part_err = |msg: &str| GrubError::BadPartition { offset: bios_boot_offset, size: bios_boot_size, msg: msg.to_string() };
    if bios_boot_offset % SECTOR as u64 != 0 || bios_boot_size % SECTOR as u64 != 0 {
        return Err(part_err("not aligned to 512-byte sectors"));
    }
    if bios_boot_offset < SECTOR as u64 {
        return Err(part_err("overlaps sector 0"));
    }
    if bios_boot_offset.checked_add(bios_boot_size).is_none_or(|end| end > disk.len()) {
        return Err(part_err(&format!("reaches past the end of the {}-byte disk", disk.len())));
    }
    // The code part of diskboot.img (below its blocklists) is never patched.
    let code = ..FIRST_BLOCKLIST - BLOCKLIST_ENTRY;
    if core.len() <= SECTOR + files.lzma_decompress_img.len() {
        return Err(GrubError::BadCore { msg: format!("{} bytes is too short", core.len()) });
    }
    if core[code] != files.diskboot_img[code] {
        return Err(GrubError::BadCore { msg: "its first sector is not these files' diskboot.img".into() });
    }
    if le16(core, SECTOR - 2) != LOAD_SEGMENT {
        return Err(GrubError::BadCore { msg: format!("its blocklist does not load at segment {LOAD_SEGMENT:#x}") });
    }
    let sectors = core.len().div_ceil(SECTOR) as u64;
    let need_bytes = sectors * SECTOR as u64;
    if need_bytes > bios_boot_size {
        return Err(GrubError::DoesNotFit { need_bytes, need_sectors: sectors, have_bytes: bios_boot_size });
    }
    // diskboot loads everything below 0x78000, starting at 0x8000.
    let max_sectors = ((CORE_LIMIT - LINK_ADDR) as usize / SECTOR) as u64;
    if sectors > max_sectors {
        return Err(GrubError::TooBig { what: "core image", size: need_bytes, limit: max_sectors * SECTOR as u64 });
    }
    let first_lba = bios_boot_offset / SECTOR as u64;

    // core.img, its blocklist naming the sectors after the first one.
    let mut image = core.to_vec();
    image.resize(need_bytes as usize, 0);
    let mut e = FIRST_BLOCKLIST;
    // Clear every entry mkimage may have left (down to the terminator).
    while e >= SECTOR / 2 && le16(&image, e + 8) != 0 {
        image[e..e + BLOCKLIST_ENTRY].fill(0);
        e -= BLOCKLIST_ENTRY;
    }
    image[FIRST_BLOCKLIST..FIRST_BLOCKLIST + 8].copy_from_slice(&(first_lba + 1).to_le_bytes());
    image[FIRST_BLOCKLIST + 8..FIRST_BLOCKLIST + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    image[FIRST_BLOCKLIST + 10..SECTOR].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
    // The terminator: an all-zero entry below the first one.
    image[FIRST_BLOCKLIST - BLOCKLIST_ENTRY..FIRST_BLOCKLIST].fill(0);
    let part = disk.sub(bios_boot_offset, bios_boot_size)?;
    part.write_at(&image, 0)?;

    // boot.img into sector 0, keeping what the disk has there.
    let mut old = [0u8; SECTOR];
    disk.read_at(&mut old, 0)?;
    let mut mbr = files.boot_img.clone();
    mbr[BOOT_BPB].copy_from_slice(&old[BOOT_BPB]);
    mbr[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&first_lba.to_le_bytes());
    mbr[BOOT_DRIVE] = 0xFF;
    mbr[BOOT_DRIVE_CHECK] = 0x90;
    mbr[BOOT_DRIVE_CHECK + 1] = 0x90;
    mbr[BOOT_MBR_TAIL].copy_from_slice(&old[BOOT_MBR_TAIL]);
    mbr[0x1FE] = 0x55;
    mbr[0x1FF] = 0xAA;
    disk.write_at(&mbr, 0)?;
    Ok(())
}

/// What [`install_for_plan`] wrote, for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    /// GPT number of the ESP GRUB boots Linux from.
    pub esp_partition: u32,
    /// First sector of core.img (in the bios-boot partition).
    pub core_lba: u64,
    pub core_bytes: u64,
    pub core_sha256: String,
    /// Embedded modules, in load order.
    pub modules: Vec<String>,
}

/// The whole BIOS install for a planned disk already written to `file`:
/// the core image for [`BOOT_MODULES`] and [`boot_config`] (kernel and
/// initramfs in `/boot` of the plan's first ESP, `cmdline`), put into the
/// plan's first bios-boot partition, and boot.img into sector 0.
pub fn install_for_plan(file: &std::fs::File, plan: &crate::plan::Plan, files: &GrubFiles, cmdline: &str) -> Result<Installed, GrubError> {
    use sha2::{Digest, Sha256};
    let guid = |t: &str| crate::recipe::partition_type_guid(t).expect("known type");
    let esp = plan
        .partitions
        .iter()
        .find(|p| p.type_guid == guid("esp"))
        .ok_or(GrubError::NoPartition { kind: "esp", why: "GRUB loads the kernel and initramfs from /boot on it" })?;
    let bios = plan
        .partitions
        .iter()
        .find(|p| p.type_guid == guid("bios-boot"))
        .ok_or(GrubError::NoPartition { kind: "bios-boot", why: "it holds GRUB's core image; 1MiB is enough" })?;
    let core = core_image(files, BOOT_MODULES, &prefix(esp.number), &boot_config(esp.number, cmdline))?;
    install(Region::new(file, 0, plan.disk_size, "disk"), files, &core, bios.offset, bios.size)?;
    Ok(Installed {
        esp_partition: esp.number,
        core_lba: bios.offset / SECTOR as u64,
        core_bytes: core.len() as u64,
        core_sha256: hex::encode(Sha256::digest(&core)),
        modules: files.resolve(BOOT_MODULES)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A minimal i386 ELF executable shaped like GRUB's kernel.img: code at
    /// 0x9000, read-only data, data, bss and a section-name table.
    fn fake_kernel() -> Vec<u8> {
        // (name, type, flags, addr, content or bss size)
        let text = b"\xEA\x00\x90\x00\x00CODE-CODE-CODE".to_vec();
        let rodata = b"RODATA!!".to_vec();
        let data = b"DATA".to_vec();
        let names = b"\0.text\0.rodata\0.data\0.bss\0.shstrtab\0".to_vec();
        let mut f = vec![0u8; 52];
        let place = |f: &mut Vec<u8>, d: &[u8]| {
            let off = f.len() as u32;
            f.extend_from_slice(d);
            off
        };
        let t = place(&mut f, &text);
        let r = place(&mut f, &rodata);
        let d = place(&mut f, &data);
        let n = place(&mut f, &names);
        while f.len() % 4 != 0 {
            f.push(0);
        }
        let shoff = f.len() as u32;
        // name offset, type, flags, addr, offset, size, link, info, align, entsize
        let secs: [[u32; 10]; 6] = [
            [0; 10],
            [1, 1, 6, 0x9000, t, text.len() as u32, 0, 0, 1, 0],
            [7, 1, 2, 0x9014, r, rodata.len() as u32, 0, 0, 4, 0],
            [15, 1, 3, 0x9020, d, data.len() as u32, 0, 0, 32, 0],
            [21, 8, 3, 0x9040, 0, 0x100, 0, 0, 32, 0],
            [26, 3, 0, 0, n, names.len() as u32, 0, 0, 1, 0],
        ];
        for s in secs {
            for v in s {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&3u16.to_le_bytes());
        f[0x20..0x24].copy_from_slice(&shoff.to_le_bytes());
        f[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        f[0x30..0x32].copy_from_slice(&6u16.to_le_bytes());
        f[0x32..0x34].copy_from_slice(&5u16.to_le_bytes());
        f
    }

    fn fake_files() -> GrubFiles {
        let mut m = BTreeMap::new();
        let mut boot = vec![0xB0u8; 512];
        boot[0x1FE] = 0x55;
        boot[0x1FF] = 0xAA;
        m.insert("boot.img".to_string(), boot);
        let mut diskboot = vec![0xD0u8; 512];
        diskboot[0x1E8..0x200].fill(0);
        diskboot[0x1F4] = 2;
        diskboot[0x1FE..].copy_from_slice(&0x820u16.to_le_bytes());
        m.insert("diskboot.img".to_string(), diskboot);
        let mut dec = vec![0xDCu8; 0x60];
        dec[0x08..0x18].fill(0);
        m.insert("lzma_decompress.img".to_string(), dec);
        m.insert("kernel.img".to_string(), fake_kernel());
        m.insert("moddep.lst".to_string(), b"a: b c\nb: c\nc:\nlonely:\n".to_vec());
        m.insert("a.mod".to_string(), b"AAAAA".to_vec());
        m.insert("b.mod".to_string(), b"BBBBBBBB".to_vec());
        m.insert("c.mod".to_string(), b"C".to_vec());
        m.insert("lonely.mod".to_string(), b"LL".to_vec());
        m.insert("README".to_string(), b"ignored".to_vec());
        GrubFiles::from_files("fake", m).unwrap()
    }

    #[test]
    fn dependencies_come_first_in_grub_mkimage_order() {
        let f = fake_files();
        assert_eq!(f.resolve(&["a"]).unwrap(), ["c", "b", "a"]);
        assert_eq!(f.resolve(&["lonely", "a.mod", "c"]).unwrap(), ["lonely", "c", "b", "a"]);
        let e = f.resolve(&["a", "nope"]).unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }

    #[test]
    fn the_payload_is_the_kernel_then_the_module_area() {
        let f = fake_files();
        let core = core_image(&f, &["a"], "(hd0,gpt1)/boot/grub", "set x=1\n").unwrap();
        let p = unpack_core(&f, &core).unwrap();
        // The kernel: sections at their addresses minus 0x9000, ending with .data.
        assert_eq!(&p[..5], b"\xEA\x00\x90\x00\x00");
        assert_eq!(&p[0x14..0x1C], b"RODATA!!");
        assert_eq!(&p[0x20..0x24], b"DATA");
        let m = &p[0x24..];
        assert_eq!(le32(m, 0), MODULE_MAGIC);
        assert_eq!(le32(m, 4), 12);
        assert_eq!(le32(m, 8) as usize, m.len());
        let mut objs = Vec::new();
        let mut at = 12;
        while at < m.len() {
            let (typ, size) = (le32(m, at), le32(m, at + 4) as usize);
            objs.push((typ, m[at + 8..at + size].to_vec()));
            at += size;
        }
        assert_eq!(at, m.len());
        let want: Vec<(u32, &[u8])> =
            vec![(0, b"C\0\0\0"), (0, b"BBBBBBBB"), (0, b"AAAAA\0\0\0"), (2, b"set x=1\n\0\0\0\0"), (3, b"(hd0,gpt1)/boot/grub\0\0\0\0")];
        assert_eq!(objs.iter().map(|(t, d)| (*t, d.as_slice())).collect::<Vec<_>>(), want);
        // Headers: the decompressor's sizes and diskboot's sector count.
        let dec = &core[512..512 + 0x60];
        assert_eq!(le32(dec, 0x0C) as usize, p.len());
        assert_eq!(le32(dec, 0x08) as usize, core.len() - 512 - 0x60);
        assert_eq!(le16(&core, 0x1FC) as usize, (core.len() - 512).div_ceil(512));
        assert_eq!(&core[..0x1E8], &f.diskboot_img[..0x1E8]);
    }

    #[test]
    fn core_images_are_reproducible_and_follow_their_inputs() {
        let f = fake_files();
        let a = core_image(&f, &["a"], "p", "c").unwrap();
        assert_eq!(a, core_image(&f, &["a"], "p", "c").unwrap());
        assert_ne!(a, core_image(&f, &["a"], "p", "d").unwrap());
        assert_ne!(a, core_image(&f, &["a", "lonely"], "p", "c").unwrap());
        assert!(matches!(core_image(&f, &["a"], "p\0", "c"), Err(GrubError::Nul { what: "prefix" })));
    }

    #[test]
    fn missing_and_broken_files_are_named() {
        let mut m = BTreeMap::new();
        m.insert("boot.img".to_string(), vec![0u8; 512]);
        let e = GrubFiles::from_files("somewhere", m).unwrap_err().to_string();
        assert!(e.contains("somewhere") && e.contains("diskboot.img"), "{e}");
        let mut f = fake_files();
        f.kernel_img[18] = 62; // x86-64
        let e = core_image(&f, &["a"], "p", "c").unwrap_err().to_string();
        assert!(e.contains("kernel.img"), "{e}");
    }

    #[test]
    fn install_patches_both_blocklist_and_boot_sector_and_keeps_the_mbr() {
        let f = fake_files();
        let core = core_image(&f, &["a", "lonely"], "p", "config").unwrap();
        let file = tempfile::tempfile().unwrap();
        let disk_len = 4u64 << 20;
        file.set_len(disk_len).unwrap();
        // An "existing" sector 0: a BPB-ish area, a disk signature and a
        // protective MBR entry.
        let mut old = [0x11u8; 512];
        old[0x1BE..0x1CE].copy_from_slice(&[0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0xFF, 0, 0]);
        old[0x1FE] = 0x55;
        old[0x1FF] = 0xAA;
        file.write_all_at(&old, 0).unwrap();
        // Stale data in the bios-boot partition's padding must be cleared.
        let (off, size) = (1u64 << 20, 1u64 << 20);
        file.write_all_at(&vec![0x77u8; size as usize], off).unwrap();
        let disk = Region::new(&file, 0, disk_len, "disk");
        install(disk, &f, &core, off, size).unwrap();

        let mut s0 = [0u8; 512];
        file.read_exact_at(&mut s0, 0).unwrap();
        assert_eq!(s0[..3], f.boot_img[..3]);
        assert_eq!(s0[0x03..0x5A], old[0x03..0x5A], "BPB area kept");
        assert_eq!(u64::from_le_bytes(s0[0x5C..0x64].try_into().unwrap()), off / 512);
        assert_eq!(s0[0x64], 0xFF);
        assert_eq!(s0[0x66..0x68], [0x90, 0x90]);
        assert_eq!(s0[0x68..0x1B8], f.boot_img[0x68..0x1B8]);
        assert_eq!(s0[0x1B8..], old[0x1B8..], "partition table and signature kept");

        let sectors = core.len().div_ceil(512);
        let mut back = vec![0u8; sectors * 512];
        file.read_exact_at(&mut back, off).unwrap();
        assert_eq!(back[..0x1E8], core[..0x1E8]);
        assert_eq!(u64::from_le_bytes(back[0x1F4..0x1FC].try_into().unwrap()), off / 512 + 1);
        assert_eq!(le16(&back, 0x1FC) as usize, sectors - 1);
        assert_eq!(le16(&back, 0x1FE), 0x820);
        assert!(back[0x1E8..0x1F4].iter().all(|b| *b == 0), "terminator");
        assert_eq!(back[512..core.len()], core[512..]);
        assert!(back[core.len()..].iter().all(|b| *b == 0), "padding to the sector");
        // The rest of the partition is left alone.
        let mut after = [0u8; 1];
        file.read_exact_at(&mut after, off + back.len() as u64).unwrap();
        assert_eq!(after[0], 0x77);
        // Same inputs, same disk bytes.
        let first = back.clone();
        install(disk, &f, &core, off, size).unwrap();
        file.read_exact_at(&mut back, off).unwrap();
        assert_eq!(back, first);
    }

    #[test]
    fn install_refuses_what_cannot_work() {
        let f = fake_files();
        let core = core_image(&f, &["a"], "p", "c").unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(2 << 20).unwrap();
        let disk = Region::new(&file, 0, 2 << 20, "disk");
        let need = core.len().div_ceil(512) as u64 * 512;
        match install(disk, &f, &core, 1 << 20, need - 512) {
            Err(GrubError::DoesNotFit { need_bytes, .. }) => assert_eq!(need_bytes, need),
            other => panic!("{other:?}"),
        }
        assert!(matches!(install(disk, &f, &core, 1 << 20, 2 << 20), Err(GrubError::BadPartition { .. })));
        assert!(matches!(install(disk, &f, &core, 1000, 1 << 20), Err(GrubError::BadPartition { .. })));
        assert!(matches!(install(disk, &f, &core, 0, 1 << 20), Err(GrubError::BadPartition { .. })));
        assert!(matches!(install(disk, &f, &[0u8; 2048], 1 << 20, 1 << 20), Err(GrubError::BadCore { .. })));
        let mut all = vec![0u8; 2 << 20];
        file.read_exact_at(&mut all, 0).unwrap();
        assert!(all.iter().all(|b| *b == 0), "refused installs wrote nothing");
    }

    /// A plan for partitions of (type, size) on an 8 MiB disk, by the real
    /// planner.
    fn plan_of(parts: &[(&str, &str)]) -> crate::plan::Plan {
        let parts: Vec<_> = parts.iter().map(|(t, size)| serde_json::json!({"label": t, "type": t, "size": size})).collect();
        let recipe = serde_json::json!({"name": "t", "disk": {"size": "8MiB", "partitions": parts}});
        let recipe: crate::recipe::Recipe = serde_json::from_value(recipe).unwrap();
        crate::plan::plan(&recipe, &[1; 32], |_| unreachable!("no auto sizes")).unwrap()
    }

    #[test]
    fn install_for_plan_finds_the_esp_and_the_bios_boot_partition() {
        let mut f = fake_files();
        // The fake tree has none of BOOT_MODULES: give it empty stand-ins.
        for m in BOOT_MODULES {
            f.modules.insert(m.to_string(), m.as_bytes().to_vec());
        }
        let plan = plan_of(&[("linux", "1MiB"), ("bios-boot", "1MiB")]);
        let file = tempfile::tempfile().unwrap();
        file.set_len(plan.disk_size).unwrap();
        let e = install_for_plan(&file, &plan, &f, "quiet").unwrap_err();
        assert!(e.to_string().contains("\"esp\""), "{e}");
        let plan = plan_of(&[("linux", "1MiB"), ("bios-boot", "1MiB"), ("esp", "1MiB")]);
        let done = install_for_plan(&file, &plan, &f, "quiet").unwrap();
        assert_eq!((done.esp_partition, done.core_lba), (3, (2 << 20) / 512));
        assert_eq!(done.modules, BOOT_MODULES);
        let core = core_image(&f, BOOT_MODULES, "(,gpt3)/boot/grub", &boot_config(3, "quiet")).unwrap();
        assert_eq!(done.core_bytes as usize, core.len());
        let mut back = vec![0u8; core.len() - 512];
        file.read_exact_at(&mut back, (2 << 20) + 512).unwrap();
        assert_eq!(back, core[512..]);
        let plan = plan_of(&[("linux", "1MiB"), ("esp", "1MiB")]);
        let e = install_for_plan(&file, &plan, &f, "quiet").unwrap_err();
        assert!(e.to_string().contains("\"bios-boot\""), "{e}");
    }

    #[test]
    fn boot_config_quotes_for_grub_and_splits_like_the_kernel() {
        assert_eq!(kernel_args(r#"a  b="c d" "e f"  "#), ["a", "b=c d", "e f"]);
        assert_eq!(grub_quote("console=ttyS0,115200"), "console=ttyS0,115200");
        assert_eq!(grub_quote("b=c d"), "'b=c d'");
        assert_eq!(grub_quote("x=$y;z"), "'x=$y;z'");
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
        let c = boot_config(3, r#"console=ttyS0 note="a $b""#);
        assert!(c.contains("set root=(hd0,gpt3)\n"), "{c}");
        assert_eq!(prefix(3), "(,gpt3)/boot/grub");
        assert!(c.contains("linux /boot/vmlinuz console=ttyS0 'note=a $b'\n"), "{c}");
        assert!(c.ends_with("initrd /boot/initrd.img\nboot\n"), "{c}");
        assert!(c.lines().all(|l| !l.contains(';') || l.contains('\'')), "one command a line: {c}");
    }

    #[test]
    fn the_embedded_config_reads_back_without_the_grub_files() {
        let mut f = fake_files();
        for m in BOOT_MODULES {
            f.modules.insert(m.to_string(), m.as_bytes().to_vec());
        }
        let file = tempfile::tempfile().unwrap();
        let (off, size) = (1u64 << 20, 1u64 << 20);
        file.set_len(3 << 20).unwrap();
        let disk = Region::new(&file, 0, 3 << 20, "disk");
        assert_eq!(read_config(&file, off, size).unwrap(), None, "an empty bios-boot partition holds no core image");
        // Several configs, so that the stream's start and end move within their sectors.
        for cmdline in ["quiet", r#"console=ttyS0 oem.hostname=from-cmdline oem.site.rack=7 note="a $b""#, &"x".repeat(700)] {
            let config = boot_config(3, cmdline);
            let core = core_image(&f, BOOT_MODULES, &prefix(3), &config).unwrap();
            install(disk, &f, &core, off, size).unwrap();
            assert_eq!(read_config(&file, off, size).unwrap().as_deref(), Some(config.as_str()), "{cmdline}");
        }
        // A damaged stream is an error, not a wrong answer.
        let mut b = [0u8; 64];
        file.read_exact_at(&mut b, off + 512 + 0x60).unwrap();
        b.iter_mut().for_each(|x| *x ^= 0x5A);
        file.write_all_at(&b, off + 512 + 0x60).unwrap();
        let e = read_config(&file, off, size).unwrap_err();
        assert!(matches!(e, GrubError::BadCore { .. }), "{e}");
    }

    #[test]
    fn linux_cmdline_is_what_grubs_loader_hands_the_kernel() {
        let cases = [
            ("console=ttyS0,115200 oem.hostname=a", "BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 oem.hostname=a"),
            (r#"oem.motd="x y""#, r#"BOOT_IMAGE=/boot/vmlinuz "oem.motd=x y""#),
            (r#"note=$HOME;it's"#, r#"BOOT_IMAGE=/boot/vmlinuz note=$HOME;it\'s"#),
            // GRUB cannot hand a double quote to the kernel: the builder's
            // splitter drops it, as the kernel drops a value's outer quotes.
            (r#"oem.keys=["a b"]"#, r#"BOOT_IMAGE=/boot/vmlinuz "oem.keys=[a b]""#),
        ];
        for (cmdline, want) in cases {
            assert_eq!(linux_cmdline(&boot_config(1, cmdline)).as_deref(), Some(want), "{cmdline}");
        }
        assert_eq!(grub_words(r#"a 'b c'd "e\"f" g\ h"#), ["a", "b cd", "e\"f", "g h"]);
        assert_eq!(linux_cmdline("set root=(hd0,gpt1)\nboot\n"), None);
    }
}
