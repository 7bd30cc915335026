//! `tar` and `deb` layers.
//!
//! An uncompressed tar is referenced in place: each file's content is a slice
//! of the archive. A compressed tar (gzip, zstd, xz, detected by magic bytes)
//! is first decompressed into an unnamed spool file in the output folder, and
//! the content references slices of that. A `.deb` is an `ar` archive whose
//! `data.tar*` member is spooled the same way; maintainer scripts never run.
//!
//! [`unpack`] is shared with the `oci` layer ([`super::oci`]), which adds
//! whiteouts and reads each layer blob in place inside the image archive.
//!
//! Entry names that climb out of the tree (`../x`) and paths that traverse an
//! absolute or escaping symlink are refused by [`Tree`]'s editing API.
//!
//! What is kept of each entry: the numeric uid and gid (a pax `uid`/`gid`
//! record wins over the header; user and group *names* are ignored, as
//! `tar --numeric-owner` does), the permission bits with setuid, setgid and
//! sticky, the mtime (clamped to the epoch), hardlinks (as one inode),
//! character and block devices with their numbers, fifos, long names (GNU
//! `L`/`K` entries and pax `path`/`linkpath`) and every pax
//! `SCHILY.xattr.NAME` record as xattr NAME with its bytes verbatim
//! (`security.capability`, `system.posix_acl_access`, …). Pax records are
//! length-prefixed and a value may contain newlines (binary xattrs do); the
//! `tar` crate splits them at newlines and drops such a record, so an
//! entry with one has its pax header parsed again by [`pax_records`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::content::SourceFile;
use super::{components, Content, Inode, Kind, LayerError, Meta, Tree};

/// Compression of a stream, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

pub fn sniff(head: &[u8]) -> Compressed {
    match head {
        [0x1f, 0x8b, ..] => Compressed::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compressed::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compressed::Xz,
        [b'B', b'Z', b'h', ..] => Compressed::Bzip2,
        _ => Compressed::None,
    }
}

/// Wrap a reader in the decoder its magic bytes call for.
pub fn decoder<'a>(kind: Compressed, r: impl Read + 'a, what: &Path) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match kind {
        Compressed::None => Box::new(r),
        Compressed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compressed::Zstd => Box::new(zstd::stream::read::Decoder::new(r).map_err(|e| LayerError::host(what, "opening zstd stream", e))?),
        Compressed::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        Compressed::Bzip2 => {
            return Err(LayerError::Archive {
                archive: what.to_path_buf(),
                msg: "bzip2 compression is not supported: recompress with gzip, zstd or xz".into(),
            })
        }
    })
}

/// Decompress `r` into an unnamed spool file in `spool_dir`.
pub fn spool(mut r: impl Read, spool_dir: &Path, what: &Path) -> Result<File, LayerError> {
    let mut f = tempfile::tempfile_in(spool_dir).map_err(|e| LayerError::host(spool_dir, "creating a spool file in", e))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut f);
    io::copy(&mut r, &mut w).map_err(|e| LayerError::host(what, "decompressing", e))?;
    w.flush().map_err(|e| LayerError::host(spool_dir, "writing a spool file in", e))?;
    drop(w);
    Ok(f)
}

/// Apply a `tar` layer from the host archive `path`, placed at `to`.
pub fn apply_tar(tree: &mut Tree, path: &Path, to: &str, spool_dir: &Path) -> Result<(), LayerError> {
    let mut f = File::open(path).map_err(|e| LayerError::host(path, "opening the tar", e))?;
    let mut head = [0u8; 6];
    let n = read_head(&mut f, &mut head).map_err(|e| LayerError::host(path, "reading", e))?;
    let kind = sniff(&head[..n]);
    let source = if kind == Compressed::None {
        SourceFile { path: path.to_path_buf(), file: f }
    } else {
        let dec = decoder(kind, BufReader::with_capacity(1 << 20, f), path)?;
        SourceFile { path: path.to_path_buf(), file: spool(dec, spool_dir, path)? }
    };
    let len = source.file.metadata().map_err(|e| LayerError::host(path, "reading", e))?.len();
    unpack(tree, &Archive { source: Arc::new(source), start: 0, len }, to, spool_dir, Whiteouts::Keep)
}

fn read_head(f: &mut File, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(n)
}

/// Apply a `deb` layer: the package's data.tar only.
pub fn apply_deb(tree: &mut Tree, path: &Path, to: &str, spool_dir: &Path) -> Result<(), LayerError> {
    let f = File::open(path).map_err(|e| LayerError::host(path, "opening the package", e))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| LayerError::Archive { archive: path.into(), msg: format!("not a Debian package (ar): {e}") })?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if let Some(ext) = name.strip_prefix("data.tar") {
            let kind = match ext {
                "" => Compressed::None,
                ".gz" => Compressed::Gzip,
                ".zst" => Compressed::Zstd,
                ".xz" => Compressed::Xz,
                other => {
                    return Err(LayerError::Archive { archive: path.into(), msg: format!("unsupported data.tar compression `{other}`") })
                }
            };
            let dec = decoder(kind, entry, path)?;
            let file = spool(dec, spool_dir, path)?;
            let len = file.metadata().map_err(|e| LayerError::host(path, "reading", e))?.len();
            let source = Arc::new(SourceFile { path: path.to_path_buf(), file });
            return unpack(tree, &Archive { source, start: 0, len }, to, spool_dir, Whiteouts::Keep);
        }
    }
    Err(LayerError::Archive { archive: path.into(), msg: "no data.tar member: is this a Debian package?".into() })
}

/// An uncompressed tar: `len` bytes at `start` of `source` (a whole file, or
/// one blob inside a container image archive).
#[derive(Clone)]
pub struct Archive {
    pub source: Arc<SourceFile>,
    pub start: u64,
    pub len: u64,
}

impl Archive {
    /// A positional reader over the archive's bytes (the shared file's
    /// cursor is never used, so slices of one file can be read at once).
    pub fn reader(&self) -> SliceReader<'_> {
        SliceReader { file: &self.source.file, start: self.start, len: self.len, pos: 0 }
    }
}

/// `Read + Seek` over `len` bytes at `start` of a file, by positional reads.
pub struct SliceReader<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for SliceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let k = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for SliceReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if p < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

/// What to do with OCI/overlayfs whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// A plain tar: they are ordinary files.
    Keep,
    /// A container image layer: `.wh.NAME` deletes NAME from the layers
    /// below, `.wh..wh..opq` empties its directory of what the layers below
    /// put there. Neither appears in the tree.
    Apply,
}

const WH: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Apply a layer's whiteouts to the tree before its entries are added: they
/// only ever hide what lower layers put there, whatever their order within
/// the layer.
fn apply_whiteouts(tree: &mut Tree, ar: &Archive, base: &[u8], max_members: usize) -> Result<(), LayerError> {
    let err = |msg: String| LayerError::Archive { archive: ar.source.path.clone(), msg };
    let mut reader = ar.reader();
    let mut t = tar::Archive::new(&mut reader);
    let entries = t.entries_with_seek().map_err(|e| err(format!("not a tar archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index >= max_members {
            return Err(err(format!("more than {max_members} members: refusing the archive (the limit on members per archive)")));
        }
        let entry = entry.map_err(|e| err(format!("reading entries: {e}")))?;
        let name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let rel = components(&name).map_err(|_| err(format!("entry `{shown}` escapes the tree (`..`): refusing the archive")))?;
        check_path(base, &rel, index, &shown).map_err(err)?;
        let Some((last, dir)) = rel.split_last() else { continue };
        if !last.starts_with(WH) {
            continue;
        }
        let mut at = base.to_vec();
        for c in dir {
            at.push(b'/');
            at.extend_from_slice(c);
        }
        let escape = |e: super::TreeError| match e {
            t @ super::TreeError::Escape { .. } => err(format!("whiteout `{shown}` escapes the tree ({t}): refusing the archive")),
            other => LayerError::Tree(other),
        };
        if *last == OPAQUE {
            tree.clear_dir(&at).map_err(escape)?;
        } else {
            let target = &last[WH.len()..];
            if target.is_empty() || target == b"." || target == b".." || target.starts_with(WH) {
                return Err(err(format!("whiteout `{shown}` names no entry")));
            }
            at.push(b'/');
            at.extend_from_slice(target);
            tree.remove(&at).map_err(escape)?;
        }
    }
    Ok(())
}

/// Walk an uncompressed tar and add its entries under `to`.
pub fn unpack(tree: &mut Tree, ar: &Archive, to: &str, spool_dir: &Path, whiteouts: Whiteouts) -> Result<(), LayerError> {
    unpack_limited(tree, ar, to, spool_dir, whiteouts, MAX_MEMBERS)
}

/// The most members (entries, pax and long-name headers included) one
/// archive may have: 4 Mi. A Debian root has about 20,000 files and a big
/// container image a few hundred thousand; the tree costs roughly 150 bytes
/// of memory per entry, so this bounds an archive made to exhaust memory
/// at well under 1 GiB.
pub const MAX_MEMBERS: usize = 4 << 20;

/// The longest path an entry may have inside the tree (after `to`), in
/// bytes: Linux's PATH_MAX, 4096. It bounds the depth too (at most 2,048
/// components), which the tree's recursive walks rely on.
pub const MAX_PATH: usize = 4096;

/// An entry's path in the tree (`base` + `rel`) within [`MAX_PATH`].
fn check_path(base: &[u8], rel: &[&[u8]], index: usize, shown: &str) -> Result<(), String> {
    let len = base.len() + rel.iter().map(|c| c.len() + 1).sum::<usize>();
    if len <= MAX_PATH {
        return Ok(());
    }
    let head: String = shown.chars().take(60).collect();
    Err(format!(
        "entry {index} (`{head}…`) has a path of {len} bytes in the tree, over the {MAX_PATH}-byte limit (PATH_MAX): refusing the archive"
    ))
}

/// [`unpack`] with another member limit (tests).
fn unpack_limited(
    tree: &mut Tree,
    ar: &Archive,
    to: &str,
    spool_dir: &Path,
    whiteouts: Whiteouts,
    max_members: usize,
) -> Result<(), LayerError> {
    let source = &ar.source;
    let archive_path = source.path.clone();
    let err = |msg: String| LayerError::Archive { archive: archive_path.clone(), msg };
    let mut base: Vec<u8> = Vec::new();
    for c in components(to.as_bytes())? {
        base.push(b'/');
        base.extend_from_slice(c);
    }
    if whiteouts == Whiteouts::Apply {
        apply_whiteouts(tree, ar, &base, max_members)?;
    }
    let mut raw_pax: Option<BTreeMap<u64, PaxRecords>> = None;
    let mut reader = ar.reader();
    let mut t = tar::Archive::new(&mut reader);
    let entries = t.entries_with_seek().map_err(|e| err(format!("not a tar archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index >= max_members {
            return Err(err(format!("more than {max_members} members: refusing the archive (the limit on members per archive)")));
        }
        let mut entry = entry.map_err(|e| err(format!("reading entries: {e}")))?;
        // The entry's pax records, each whole: from the tar crate when it
        // parsed them all, else from the raw header (a value had a newline,
        // and the crate may then have taken the header's name as well).
        let mut records: PaxRecords = Vec::new();
        let mut reparse = false;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts {
                match ext {
                    Ok(ext) => records.push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec())),
                    Err(_) => reparse = true,
                }
            }
        }
        if reparse {
            let raw = raw_pax.get_or_insert_with(|| raw_pax_headers(ar));
            records = raw.get(&entry.raw_header_position()).cloned().unwrap_or_default();
        }
        let pax = |key: &[u8]| records.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let (pax_name, link) = if reparse { (pax(b"path"), pax(b"linkpath")) } else { (None, None) };
        let name = pax_name.unwrap_or_else(|| entry.path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&name).into_owned();
        let rel = components(&name).map_err(|_| err(format!("entry `{shown}` escapes the tree (`..`): refusing the archive")))?;
        check_path(&base, &rel, index, &shown).map_err(err)?;
        if whiteouts == Whiteouts::Apply && rel.last().is_some_and(|l| l.starts_with(WH)) {
            continue;
        }
        let mut at = base.clone();
        for c in &rel {
            at.push(b'/');
            at.extend_from_slice(c);
        }
        let h = entry.header().clone();
        let (mtime, _) = tree.clamp_time(h.mtime().unwrap_or(0) as i64, 0);
        let mut meta = Meta {
            mode: h.mode().map_err(|e| err(format!("{shown}: {e}")))? & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime,
            mtime_nsec: 0,
            xattrs: BTreeMap::new(),
        };
        for (key, value) in &records {
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.insert(x.to_vec(), value.clone());
            } else if key == b"uid" {
                meta.uid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(meta.uid);
            } else if key == b"gid" {
                meta.gid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(meta.gid);
            }
        }
        let et = h.entry_type();
        let escape = |e: LayerError| match e {
            LayerError::Tree(t @ super::TreeError::Escape { .. }) => {
                err(format!("entry `{shown}` escapes the tree ({t}): refusing the archive"))
            }
            other => other,
        };
        use tar::EntryType as T;
        let kind = match et {
            T::Directory => Kind::Dir(BTreeMap::new()),
            T::Regular | T::Continuous | T::GNUSparse => {
                let len = entry.size();
                if et == T::GNUSparse || h.as_gnu().is_some_and(|g| g.is_extended()) {
                    Kind::File(spool_sparse(&mut entry, source, spool_dir).map_err(|e| err(format!("{shown}: {e}")))?)
                } else {
                    // The content is referenced in place: it must lie inside
                    // the archive (a truncated archive's last entry, or a
                    // size field that lies, does not).
                    let pos = entry.raw_file_position();
                    if pos.checked_add(len).is_none_or(|end| end > ar.len) {
                        return Err(err(format!(
                            "{shown}: the entry says it holds {len} bytes from offset {pos}, past the end of the archive ({} bytes): truncated or corrupt",
                            ar.len
                        )));
                    }
                    Kind::File(Content::Slice { source: source.clone(), offset: ar.start + pos, len, sparse: None })
                }
            }
            T::Symlink => {
                let t = link.clone().or_else(|| entry.link_name_bytes().map(|t| t.into_owned()));
                Kind::Symlink(t.ok_or_else(|| err(format!("{shown}: symlink without a target")))?)
            }
            T::Link => {
                let t = link.clone().or_else(|| entry.link_name_bytes().map(|t| t.into_owned()));
                let t = t.ok_or_else(|| err(format!("{shown}: hardlink without a target")))?;
                let tc = components(&t).map_err(|_| err(format!("hardlink `{shown}` points outside the tree")))?;
                let mut target = base.clone();
                for c in tc {
                    target.push(b'/');
                    target.extend_from_slice(c);
                }
                tree.hardlink(&at, &target).map_err(|e| escape(e.into()))?;
                continue;
            }
            T::Char | T::Block => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                if et == T::Char {
                    Kind::CharDev { major, minor }
                } else {
                    Kind::BlockDev { major, minor }
                }
            }
            T::Fifo => Kind::Fifo,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            other => return Err(err(format!("{shown}: unsupported tar entry type {other:?}"))),
        };
        if rel.is_empty() && !matches!(kind, Kind::Dir(_)) {
            return Err(err(format!("entry `{shown}` would replace the root directory")));
        }
        tree.insert(&at, Inode { meta, kind }).map_err(|e| escape(e.into()))?;
    }
    Ok(())
}

/// Pax records, (key, value), in order.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Split pax extended-header data into its records, by their length
/// prefixes (`LEN KEY=VALUE\n`, LEN counting the whole record): values may
/// contain newlines. Stops at the first malformed record.
pub fn pax_records(data: &[u8]) -> PaxRecords {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|b| *b == b' ') else { break };
        let Some(len) = std::str::from_utf8(&rest[..sp]).ok().and_then(|l| l.parse::<usize>().ok()) else { break };
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            break;
        }
        let kv = &rest[sp + 1..len - 1];
        let Some(eq) = kv.iter().position(|b| *b == b'=') else { break };
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    out
}

/// Every local pax header of the archive, parsed by [`pax_records`], by the
/// header position of the entry it describes (GNU long-name entries between
/// them skipped). For the entries whose records the tar crate cannot split.
fn raw_pax_headers(ar: &Archive) -> BTreeMap<u64, PaxRecords> {
    let mut map = BTreeMap::new();
    let mut reader = ar.reader();
    let mut t = tar::Archive::new(&mut reader);
    let Ok(entries) = t.entries_with_seek() else { return map };
    let mut pending = None;
    for entry in entries.raw(true) {
        let Ok(mut entry) = entry else { break };
        let et = entry.header().entry_type();
        if et.is_pax_local_extensions() {
            let mut data = Vec::new();
            if entry.read_to_end(&mut data).is_err() {
                break;
            }
            pending = Some(pax_records(&data));
        } else if et.is_gnu_longname() || et.is_gnu_longlink() || et.is_pax_global_extensions() {
            continue;
        } else if let Some(records) = pending.take() {
            map.insert(entry.raw_header_position(), records);
        }
    }
    map
}

/// GNU sparse entries: the tar crate expands them on read; store the
/// expanded content in a spool file, leaving all-zero 4 KiB blocks as holes.
fn spool_sparse(entry: &mut impl Read, source: &SourceFile, spool_dir: &Path) -> io::Result<Content> {
    let f = tempfile::tempfile_in(spool_dir)?;
    let mut buf = vec![0u8; 4096];
    let mut pos = 0u64;
    let mut ranges: Vec<Range<u64>> = Vec::new();
    use std::os::unix::fs::FileExt;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = entry.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            f.write_all_at(&buf[..n], pos)?;
            match ranges.last_mut() {
                Some(r) if r.end == pos => r.end = pos + n as u64,
                _ => ranges.push(pos..pos + n as u64),
            }
        }
        pos += n as u64;
        if n < buf.len() {
            break;
        }
    }
    f.set_len(pos)?;
    let sparse = if ranges.len() == 1 && ranges[0] == (0..pos) { None } else { Some(Arc::from(ranges.into_boxed_slice())) };
    let src = Arc::new(SourceFile { path: PathBuf::from(format!("{} (sparse entry)", source.path.display())), file: f });
    Ok(Content::Slice { source: src, offset: 0, len: pos, sparse })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with a directory, a file, a hardlink, a symlink, a device and a
    /// PAX xattr, in the given compression.
    fn sample(compress: Compressed) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path("etc/").unwrap();
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/passwd").unwrap();
        h.set_mode(0o4644);
        h.set_uid(70000);
        h.set_mtime(5);
        h.set_size(5);
        h.set_cksum();
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])]).unwrap();
        b.append(&h, &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_path("etc/passwd-").unwrap();
        h.set_link_name("etc/passwd").unwrap();
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("etc/link").unwrap();
        h.set_link_name("passwd").unwrap();
        h.set_mode(0o777);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_path("dev/null").unwrap();
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_mode(0o666);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let raw = b.into_inner().unwrap();
        match compress {
            Compressed::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw).unwrap();
                e.finish().unwrap()
            }
            Compressed::Zstd => zstd::encode_all(&raw[..], 3).unwrap(),
            Compressed::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(&raw).unwrap();
                e.finish().unwrap()
            }
            _ => raw,
        }
    }

    fn check(t: &mut Tree) {
        let p = t.find(b"/etc/passwd").expect("file");
        assert_eq!(t.find(b"/etc/passwd-"), Some(p), "hardlink");
        let i = t.inode(p);
        assert_eq!((i.meta.mode, i.meta.uid, i.meta.mtime), (0o4644, 70000, 5));
        assert_eq!(i.meta.xattrs.get(&b"user.k"[..]).map(Vec::as_slice), Some(&b"v"[..]));
        let Kind::File(c) = &i.kind else { panic!("not a file") };
        let mut buf = [0u8; 5];
        c.open().unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(matches!(t.inode(t.find(b"/dev/null").unwrap()).kind, Kind::CharDev { major: 1, minor: 3 }));
        assert!(matches!(&t.inode(t.find(b"/etc/link").unwrap()).kind, Kind::Symlink(s) if s == b"passwd"));
    }

    /// Found by `fuzz/` (target `archive`): an entry whose size runs past
    /// the end of the archive was taken as a slice of it, and the build
    /// failed later with "source file shrank". It is refused when read.
    /// A plain tar of empty files at `paths` (long ones through PAX).
    fn files_tar(dir: &Path, paths: &[String]) -> Archive {
        let mut b = tar::Builder::new(Vec::new());
        for p in paths {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(0);
            b.append_data(&mut h, p, &[][..]).unwrap();
        }
        let path = dir.join("t.tar");
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        Archive { source: Arc::new(SourceFile { path, file }), start: 0, len }
    }

    #[test]
    fn member_count_limit_at_and_past_it() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let ar = files_tar(d.path(), &paths);
        for w in [Whiteouts::Keep, Whiteouts::Apply] {
            let mut t = Tree::new(0);
            unpack_limited(&mut t, &ar, "/", d.path(), w, 100).unwrap();
            assert!(t.lookup(b"/f99").unwrap().is_some());
            let e = unpack_limited(&mut Tree::new(0), &ar, "/", d.path(), w, 99).unwrap_err().to_string();
            assert!(e.contains("more than 99 members"), "{e}");
        }
    }

    #[test]
    fn path_length_limit_at_and_past_it() {
        let d = tempfile::tempdir().unwrap();
        // Components of 99 bytes + '/': the path in the tree is "/" + each.
        let at_limit = |to: &str, total: usize| -> String {
            let mut p = String::new();
            let mut len = to.trim_end_matches('/').len();
            while len + 100 <= total {
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(&"d".repeat(99));
                len += 100;
            }
            let rest = total - len;
            if rest > 1 {
                p.push('/');
                p.push_str(&"f".repeat(rest - 1));
            }
            p
        };
        for to in ["/", "/opt/x"] {
            let ok = at_limit(to, MAX_PATH);
            let mut t = Tree::new(0);
            unpack(&mut t, &files_tar(d.path(), std::slice::from_ref(&ok)), to, d.path(), Whiteouts::Apply).unwrap();
            let full = format!("{}/{ok}", to.trim_end_matches('/'));
            assert_eq!(full.len(), MAX_PATH);
            assert!(t.lookup(full.as_bytes()).unwrap().is_some(), "{to}: the entry at the limit is in the tree");
            let over = format!("{ok}x");
            let e = unpack(&mut Tree::new(0), &files_tar(d.path(), &[over]), to, d.path(), Whiteouts::Keep).unwrap_err().to_string();
            assert!(e.contains(&format!("has a path of {} bytes", MAX_PATH + 1)) && e.contains("entry 0"), "{e}");
        }
    }

    #[test]
    fn an_entry_past_the_end_of_the_archive_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_mode(0o644);
        h.set_size(50 << 20);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[7u8; 512]);
        let p = d.path().join("cut.tar");
        std::fs::write(&p, &raw).unwrap();
        let mut t = Tree::new(1000);
        let e = apply_tar(&mut t, &p, "/", d.path()).unwrap_err().to_string();
        assert!(e.contains("big") && e.contains("past the end of the archive"), "{e}");
    }

    #[test]
    fn tar_in_every_compression() {
        let d = tempfile::tempdir().unwrap();
        for c in [Compressed::None, Compressed::Gzip, Compressed::Zstd, Compressed::Xz] {
            let p = d.path().join(format!("x-{c:?}.tar"));
            std::fs::write(&p, sample(c)).unwrap();
            let mut t = Tree::new(1000);
            apply_tar(&mut t, &p, "/", d.path()).unwrap();
            check(&mut t);
        }
    }

    #[test]
    fn deb_data_tar_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.deb");
        let mut ar = ar::Builder::new(std::fs::File::create(&p).unwrap());
        for (name, data) in
            [("debian-binary", b"2.0\n".to_vec()), ("control.tar.xz", sample(Compressed::Xz)), ("data.tar.xz", sample(Compressed::Xz))]
        {
            ar.append(&ar::Header::new(name.as_bytes().to_vec(), data.len() as u64), &data[..]).unwrap();
        }
        drop(ar);
        let mut t = Tree::new(1000);
        apply_deb(&mut t, &p, "/", d.path()).unwrap();
        check(&mut t);
        assert!(apply_deb(&mut Tree::new(0), &d.path().join("x-None.tar"), "/", d.path()).is_err());
    }

    /// What a Debian root tarball from mmdebstrap holds (FINDINGS of
    /// research-12, §6): `./dev` nodes in old GNU headers before the `./`
    /// entry, numeric owners only (pax `uid`/`gid` too), setuid/setgid
    /// bits, `./`-prefixed hardlinks, and binary xattrs whose pax records
    /// contain newlines (a file capability or an ACL naming id 10), which
    /// the tar crate alone drops, along with a pax path in the same header.
    #[test]
    fn a_root_tarball_keeps_owners_modes_links_devices_and_binary_xattrs() {
        let mut b = tar::Builder::new(Vec::new());
        let entry = |b: &mut tar::Builder<Vec<u8>>, et: tar::EntryType, path: &str, mode: u32, link: Option<&str>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(et);
            h.set_path(path).unwrap();
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_mode(mode);
            h.set_mtime(1_000);
            h.set_size(data.len() as u64);
            if et == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        entry(&mut b, tar::EntryType::Directory, "./dev/", 0o755, None, b"");
        entry(&mut b, tar::EntryType::Char, "./dev/null", 0o666, None, b"");
        entry(&mut b, tar::EntryType::Directory, "./", 0o700, None, b"");
        // v2 capabilities with a 0x0a byte (cap_dac_override + cap_fowner).
        let cap = b"\x01\x00\x00\x02\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        // ACL: user_obj rwx, group:10 r-x (id 10 = a newline byte), mask, other.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 7u16, u32::MAX), (8, 5, 10), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 5, u32::MAX)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", &cap[..]),
            ("path", &b"./usr/bin/new\nline"[..]),
            ("SCHILY.xattr.user.after", &b"ok"[..]),
        ])
        .unwrap();
        entry(&mut b, tar::EntryType::Regular, "./usr/bin/placeholder", 0o4755, None, b"bin");
        b.append_pax_extensions([("uid", &b"100"[..]), ("gid", &b"103"[..]), ("SCHILY.xattr.system.posix_acl_default", &acl[..])]).unwrap();
        entry(&mut b, tar::EntryType::Directory, "./var/lib/etcd/", 0o2750, None, b"");
        entry(&mut b, tar::EntryType::Regular, "./usr/bin/perl", 0o755, None, b"perl");
        entry(&mut b, tar::EntryType::Link, "./usr/bin/perl5.36.0", 0o755, Some("./usr/bin/perl"), b"");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("root.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        let mut t = Tree::new(5_000);
        apply_tar(&mut t, &p, "/", d.path()).unwrap();
        assert_eq!(t.inode(Tree::ROOT).meta.mode, 0o700, "the root entry after ./dev sets the root's metadata");
        assert!(matches!(t.inode(t.find(b"/dev/null").unwrap()).kind, Kind::CharDev { major: 1, minor: 3 }));
        let f = t.inode(t.find(b"/usr/bin/new\nline").expect("the pax path, not the header's"));
        assert!(t.find(b"/usr/bin/placeholder").is_none());
        assert_eq!(f.meta.mode, 0o4755);
        assert_eq!(f.meta.xattrs.get(&b"security.capability"[..]), Some(&cap), "binary capability kept verbatim");
        assert_eq!(f.meta.xattrs.get(&b"user.after"[..]).map(Vec::as_slice), Some(&b"ok"[..]));
        let etcd = t.inode(t.find(b"/var/lib/etcd").unwrap());
        assert_eq!((etcd.meta.mode, etcd.meta.uid, etcd.meta.gid), (0o2750, 100, 103));
        assert_eq!(etcd.meta.xattrs.get(&b"system.posix_acl_default"[..]), Some(&acl));
        assert_eq!(t.find(b"/usr/bin/perl5.36.0"), t.find(b"/usr/bin/perl"), "a hardlink is one inode");
        assert_eq!(pax_records(b"12 path=a\nb\n9 uid=42\n"), [(b"path".to_vec(), b"a\nb".to_vec()), (b"uid".to_vec(), b"42".to_vec())]);
        assert_eq!(pax_records(b"99 path=x\n"), []);
    }
}
