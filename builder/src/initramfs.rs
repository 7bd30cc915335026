//! The initramfs writer: a [`Tree`] as a cpio `newc` archive, compressed with
//! gzip (parallel, reproducible, see [`pgzip`]), zstd, or not at all.
//!
//! The archive is what the kernel's `init/initramfs.c` and GNU `cpio -i`
//! read:
//! - entries in tree walk order (parents first, names sorted); the root is
//!   `.`, other paths have no leading slash (`etc/passwd`);
//! - mode = `st_mode`, uid, gid, nlink and mtime from the tree; `rdev`
//!   major/minor for devices; `dev` is always 0:0;
//! - inode numbers are assigned 1, 2, 3 … in walk order, one per tree inode,
//!   so hardlinked names share one number;
//! - a hardlinked file (nlink > 1) carries its data on its *last* name and
//!   size 0 on the others, as GNU cpio writes it (the kernel links each later
//!   name to the first and writes the data when it comes);
//! - a symlink's target is its data; then the `TRAILER!!!` entry.
//!
//! Nothing of the host (inode numbers, devices, time) enters the output.
//! Limits of the format and of the `cpio` crate: extended attributes cannot
//! be expressed in `newc` and are left out; mtimes are clamped to
//! `0..=u32::MAX`; a file of 4 GiB or more and a name that is not UTF-8 are
//! errors naming the entry. File content is streamed from its source, never
//! held whole in memory.
//!
//! zstd output is one multithreaded frame with a checksum and no content size
//! (the stream length is not known in advance). zstd's multithreaded mode
//! gives the same bytes for any worker count ≥ 1, so the worker count only
//! changes the speed (checked by the tests); gzip output likewise (see
//! [`pgzip`]).

pub mod pgzip;

use std::io::{self, Write};

use crate::recipe::Compression;
use crate::tree::{show, Content, Kind, Tree};

/// Default gzip level.
pub const GZIP_DEFAULT_LEVEL: u32 = 6;
/// Default zstd level.
pub const ZSTD_DEFAULT_LEVEL: u32 = 3;

/// What [`write`] produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitramfsReport {
    /// cpio entries, without the trailer.
    pub entries: u64,
    /// Size of the cpio archive.
    pub uncompressed_bytes: u64,
    /// Bytes written to the output (equal to the cpio size for `none`).
    pub compressed_bytes: u64,
}

/// Errors of the initramfs writer; tree paths are shown with a leading slash.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{path}: reading the file content from {origin}")]
    Read {
        path: String,
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the file is {size} bytes, but cpio newc holds at most 4 GiB - 1 per file; leave it out of the initramfs")]
    TooLarge { path: String, size: u64 },
    #[error("{path}: the name is not valid UTF-8, which the cpio writer cannot store; rename it")]
    NonUtf8Name { path: String },
    #[error("the tree has more than 2^32 - 1 inodes, more than cpio newc can number")]
    TooManyInodes,
    #[error("{path}: writing the cpio entry")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the initramfs output")]
    Output(#[source] io::Error),
    #[error("{level} is not a valid {codec} level: use {range}")]
    Level { codec: &'static str, level: u32, range: &'static str },
    #[error("{codec} compression failed: {msg}")]
    Compress { codec: &'static str, msg: String },
    #[error("{what} {path}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Write `tree` as an initramfs to `out`.
///
/// `level`: gzip 1–9 (default 6), zstd 1–19 (default 3); ignored for `none`.
pub fn write(tree: &Tree, compression: Compression, level: Option<u32>, out: &mut dyn Write) -> Result<InitramfsReport, InitramfsError> {
    write_with_threads(tree, compression, level, pgzip::default_threads(), out)
}

/// [`write`] to the file `path`, atomically: the data goes to a temporary
/// file beside it, is synced, and renamed over `path` only on success; on any
/// error the temporary file is removed and an existing `path` stays as it was.
pub fn write_to_path(
    tree: &Tree,
    compression: Compression,
    level: Option<u32>,
    path: &std::path::Path,
) -> Result<InitramfsReport, InitramfsError> {
    fn file_err<'a>(what: &'static str, p: &'a std::path::Path) -> impl FnOnce(io::Error) -> InitramfsError + 'a {
        move |source| InitramfsError::File { what, path: p.to_path_buf(), source }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(file_err("creating a temporary file in", dir))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, tmp);
    let report = write(tree, compression, level, &mut out)?;
    let tmp = out.into_inner().map_err(|e| file_err("writing", path)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(file_err("syncing", tmp.path()))?;
    tmp.persist(path).map_err(|e| file_err("renaming the temporary file to", path)(e.error))?;
    Ok(report)
}

/// [`write`] with an explicit number of compressing threads. The output does
/// not depend on it (checked by the tests).
pub fn write_with_threads(
    tree: &Tree,
    compression: Compression,
    level: Option<u32>,
    threads: usize,
    out: &mut dyn Write,
) -> Result<InitramfsReport, InitramfsError> {
    match compression {
        Compression::None => {
            let mut counted = Counting { inner: out, n: 0 };
            let entries = write_cpio(tree, &mut counted)?;
            counted.flush().map_err(InitramfsError::Output)?;
            Ok(InitramfsReport { entries, uncompressed_bytes: counted.n, compressed_bytes: counted.n })
        }
        Compression::Gzip => {
            let level = level.unwrap_or(GZIP_DEFAULT_LEVEL);
            if !(1..=9).contains(&level) {
                return Err(InitramfsError::Level { codec: "gzip", level, range: "1 to 9" });
            }
            let mut entries = 0;
            let stats = pgzip::compress(level, threads, out, |w| {
                entries = write_cpio(tree, w)?;
                Ok(())
            })
            .map_err(|f| match f {
                pgzip::Failure::Produce(e) => e,
                pgzip::Failure::Output(e) => InitramfsError::Output(e),
                pgzip::Failure::Deflate(msg) => InitramfsError::Compress { codec: "gzip", msg },
            })?;
            out.flush().map_err(InitramfsError::Output)?;
            Ok(InitramfsReport { entries, uncompressed_bytes: stats.input, compressed_bytes: stats.output })
        }
        Compression::Zstd => {
            let level = level.unwrap_or(ZSTD_DEFAULT_LEVEL);
            if !(1..=19).contains(&level) {
                return Err(InitramfsError::Level { codec: "zstd", level, range: "1 to 19" });
            }
            let zerr = |e: io::Error| InitramfsError::Compress { codec: "zstd", msg: e.to_string() };
            let mut counted = Counting { inner: out, n: 0 };
            let mut enc = zstd::stream::Encoder::new(&mut counted, level as i32).map_err(zerr)?;
            // Multithreaded zstd output does not depend on the worker count
            // as long as it is at least 1 (0 is the different, single-thread
            // mode), so the worker count only changes the speed.
            enc.multithread(threads.max(1) as u32).map_err(zerr)?;
            enc.include_checksum(true).map_err(zerr)?;
            let mut raw = Counting { inner: &mut enc, n: 0 };
            let entries = write_cpio(tree, &mut raw)?;
            let uncompressed_bytes = raw.n;
            enc.finish().map_err(InitramfsError::Output)?;
            counted.flush().map_err(InitramfsError::Output)?;
            Ok(InitramfsReport { entries, uncompressed_bytes, compressed_bytes: counted.n })
        }
    }
}

/// Write the cpio `newc` archive of `tree` to `out`; returns the number of
/// entries (the trailer not counted).
pub fn write_cpio(tree: &Tree, out: &mut dyn Write) -> Result<u64, InitramfsError> {
    // The cpio crate flushes after every entry; passed on to a zstd encoder
    // that ends a block each time (5 % larger output, slower), to a file one
    // syscall per entry. Flushing is the caller's business, once, at the end.
    let out: &mut dyn Write = &mut NoFlush(out);
    let counts = tree.link_counts();
    // cpio inode number per tree inode (0: not seen yet).
    let mut inos = vec![0u32; counts.len()];
    // Names of each hardlinked inode still to come.
    let mut names_left = counts.clone();
    let mut next_ino: u32 = 1;
    let mut entries = 0u64;
    let mut buf = vec![0u8; 256 << 10];

    tree.try_walk(|v| -> Result<(), InitramfsError> {
        let inode = tree.inode(v.ino);
        let shown = || show(v.path);
        let name =
            if v.path.is_empty() { "." } else { std::str::from_utf8(v.path).map_err(|_| InitramfsError::NonUtf8Name { path: shown() })? };
        if inos[v.ino] == 0 {
            inos[v.ino] = next_ino;
            next_ino = next_ino.checked_add(1).ok_or(InitramfsError::TooManyInodes)?;
        }
        let nlink = counts[v.ino];
        let is_dir = matches!(inode.kind, Kind::Dir(_));
        // Data goes on the last name of a hardlinked non-directory.
        let carries_data = if is_dir || nlink <= 1 {
            true
        } else {
            names_left[v.ino] -= 1;
            names_left[v.ino] == 0
        };
        let mtime = inode.meta.mtime.clamp(0, u32::MAX as i64) as u32;
        let mut b = cpio::newc::Builder::new(name)
            .ino(inos[v.ino])
            .mode(inode.st_mode())
            .uid(inode.meta.uid)
            .gid(inode.meta.gid)
            .nlink(nlink)
            .mtime(mtime);
        if let Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } = inode.kind {
            b = b.rdev_major(major).rdev_minor(minor);
        }
        let entry_err = |source: io::Error| InitramfsError::Entry { path: shown(), source };
        match &inode.kind {
            Kind::File(content) if carries_data => {
                let size = content.len();
                let size32 = u32::try_from(size).map_err(|_| InitramfsError::TooLarge { path: shown(), size })?;
                let mut w = b.write(&mut *out, size32);
                copy_content(content, size, &mut w, &mut buf, &shown)?;
                w.finish().map_err(entry_err)?;
            }
            Kind::Symlink(target) => {
                let mut w = b.write(&mut *out, target.len() as u32);
                w.write_all(target).map_err(entry_err)?;
                w.finish().map_err(entry_err)?;
            }
            _ => {
                b.write(&mut *out, 0).finish().map_err(entry_err)?;
            }
        }
        entries += 1;
        Ok(())
    })?;
    cpio::newc::trailer(&mut *out).map_err(|source| InitramfsError::Entry { path: "TRAILER!!!".into(), source })?;
    Ok(entries)
}

/// Stream `size` bytes of `content` into `w`.
fn copy_content(content: &Content, size: u64, w: &mut dyn Write, buf: &mut [u8], shown: &dyn Fn() -> String) -> Result<(), InitramfsError> {
    crate::files::copy_content(content, size, w, buf).map_err(|e| match e {
        crate::files::CopyError::Read(source) => InitramfsError::Read { path: shown(), origin: content.origin(), source },
        crate::files::CopyError::Write(source) => InitramfsError::Entry { path: shown(), source },
    })
}

/// Passes writes on and ignores `flush`.
struct NoFlush<'a>(&'a mut dyn Write);

impl Write for NoFlush<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts what passes through.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Inode, Meta};
    use std::collections::BTreeMap;
    use std::io::Read;

    fn meta(mode: u32, uid: u32) -> Meta {
        Meta { mode, uid, gid: uid, mtime: 1_700_000_000, mtime_nsec: 0, xattrs: BTreeMap::new() }
    }

    fn file(data: &[u8], mode: u32) -> Inode {
        Inode { meta: meta(mode, 0), kind: Kind::File(Content::bytes(data.to_vec())) }
    }

    /// A tree with every kind of entry and a hardlink pair.
    fn sample_tree() -> Tree {
        let mut t = Tree::new(1_800_000_000);
        t.insert(b"/bin/sh", file(b"#!/bin/true\n", 0o755)).unwrap();
        t.insert(b"/etc/empty", file(b"", 0o644)).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
        t.insert(b"/usr/lib/big", file(&big, 0o644)).unwrap();
        t.hardlink(b"/usr/lib/big-link", b"/usr/lib/big").unwrap();
        t.insert(b"/usr/bin/su", file(b"su", 0o4755)).unwrap();
        t.insert(b"/tmp", Inode { meta: meta(0o1777, 0), kind: Kind::Dir(BTreeMap::new()) }).unwrap();
        t.insert(b"/home/user/notes", Inode { meta: meta(0o600, 1000), kind: Kind::File(Content::bytes(b"hi".to_vec())) }).unwrap();
        t.insert(b"/lib", Inode { meta: meta(0o777, 0), kind: Kind::Symlink(b"usr/lib".to_vec()) }).unwrap();
        t.insert(b"/dev/console", Inode { meta: meta(0o600, 0), kind: Kind::CharDev { major: 5, minor: 1 } }).unwrap();
        t.insert(b"/dev/sda", Inode { meta: meta(0o660, 0), kind: Kind::BlockDev { major: 8, minor: 0 } }).unwrap();
        t.insert(b"/run/fifo", Inode { meta: meta(0o644, 0), kind: Kind::Fifo }).unwrap();
        t
    }

    fn cpio_of(tree: &Tree) -> Vec<u8> {
        let mut out = Vec::new();
        let r = write(tree, Compression::None, None, &mut out).unwrap();
        assert_eq!(r.uncompressed_bytes, out.len() as u64);
        assert_eq!(r.compressed_bytes, out.len() as u64);
        out
    }

    struct Parsed {
        name: String,
        ino: u32,
        mode: u32,
        uid: u32,
        nlink: u32,
        rdev: (u32, u32),
        dev: (u32, u32),
        data: Vec<u8>,
    }

    fn parse(mut archive: &[u8]) -> Vec<Parsed> {
        let mut v = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(archive).unwrap();
            if r.entry().is_trailer() {
                archive = r.finish().unwrap();
                break;
            }
            let e = r.entry().clone();
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            v.push(Parsed {
                name: e.name().to_string(),
                ino: e.ino(),
                mode: e.mode(),
                uid: e.uid(),
                nlink: e.nlink(),
                rdev: (e.rdev_major(), e.rdev_minor()),
                dev: (e.dev_major(), e.dev_minor()),
                data,
            });
            archive = r.finish().unwrap();
        }
        assert!(archive.iter().all(|b| *b == 0), "only padding after the trailer");
        v
    }

    #[test]
    fn cpio_entries_match_the_tree() {
        let tree = sample_tree();
        let archive = cpio_of(&tree);
        assert_eq!(archive.len() % 4, 0);
        let e = parse(&archive);
        let names: Vec<&str> = e.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], ".");
        assert!(names.iter().all(|n| !n.starts_with('/')));
        // Walk order: parents before children, sorted.
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing"));
        assert!(pos("usr") < pos("usr/lib") && pos("usr/lib") < pos("usr/lib/big"));
        let get = |n: &str| &e[pos(n)];
        assert_eq!(get("bin/sh").data, b"#!/bin/true\n");
        assert_eq!(get("bin/sh").mode, 0o100755);
        assert_eq!(get("usr/bin/su").mode, 0o104755);
        assert_eq!(get("tmp").mode, 0o41777);
        assert_eq!(get("etc/empty").data, b"");
        assert_eq!(get("lib").mode, 0o120777);
        assert_eq!(get("lib").data, b"usr/lib");
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("dev/console").mode, 0o20600);
        assert_eq!(get("dev/sda").rdev, (8, 0));
        assert_eq!(get("dev/sda").mode, 0o60660);
        assert_eq!(get("run/fifo").mode, 0o10644);
        assert_eq!(get("home/user/notes").uid, 1000);
        // Hardlinks: one ino, nlink 2, data on the last name only.
        let (a, b) = (get("usr/lib/big"), get("usr/lib/big-link"));
        assert_eq!(a.ino, b.ino);
        assert_eq!((a.nlink, b.nlink), (2, 2));
        assert!(pos("usr/lib/big") < pos("usr/lib/big-link"));
        assert_eq!(a.data.len(), 0);
        assert_eq!(b.data.len(), 3_000_000);
        // Distinct inodes have distinct numbers; no host device.
        let mut inos: Vec<u32> = e.iter().map(|p| p.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), e.len() - 1);
        assert!(e.iter().all(|p| p.dev == (0, 0)));
        assert!(e.iter().all(|p| p.ino > 0));
    }

    #[test]
    fn gzip_decodes_to_the_cpio_with_flate2_and_gzip() {
        let tree = sample_tree();
        let archive = cpio_of(&tree);
        let mut gz = Vec::new();
        let r = write(&tree, Compression::Gzip, None, &mut gz).unwrap();
        assert_eq!(r.compressed_bytes, gz.len() as u64);
        assert_eq!(r.uncompressed_bytes, archive.len() as u64);
        assert_eq!(r.entries as usize, parse(&archive).len());
        let mut dec = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut dec).unwrap();
        assert!(dec == archive);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("i.gz"), &gz).unwrap();
        match std::process::Command::new("gzip").arg("-dc").arg(dir.path().join("i.gz")).output() {
            Ok(o) => {
                assert!(o.status.success(), "gzip -dc: {}", String::from_utf8_lossy(&o.stderr));
                assert!(o.stdout == archive, "gzip -dc gives the cpio bytes");
            }
            Err(e) => eprintln!("NOTICE: system gzip not runnable ({e}); that oracle skipped"),
        }
    }

    #[test]
    fn output_is_identical_across_runs_and_thread_counts() {
        let tree = sample_tree();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut first = Vec::new();
            write_with_threads(&tree, c, None, 1, &mut first).unwrap();
            for threads in [1, 2, 4] {
                let mut again = Vec::new();
                write_with_threads(&tree, c, None, threads, &mut again).unwrap();
                assert!(again == first, "{c:?} with {threads} threads differs");
            }
        }
    }

    #[test]
    fn zstd_round_trips() {
        let tree = sample_tree();
        let archive = cpio_of(&tree);
        for level in [None, Some(1), Some(19)] {
            let mut z = Vec::new();
            let r = write(&tree, Compression::Zstd, level, &mut z).unwrap();
            assert_eq!(r.compressed_bytes, z.len() as u64);
            assert_eq!(r.uncompressed_bytes, archive.len() as u64);
            assert!(zstd::decode_all(&z[..]).unwrap() == archive);
        }
    }

    #[test]
    fn write_to_path_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd.img");
        let tree = sample_tree();
        let r = write_to_path(&tree, Compression::Gzip, None, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), r.compressed_bytes);
        let before = std::fs::read(&path).unwrap();
        // A failing write leaves the previous file and no temporary behind.
        let mut bad = Tree::new(0);
        let host = dir.path().join("vanishing");
        std::fs::write(&host, b"x").unwrap();
        let content = Content::host(&host).unwrap();
        std::fs::remove_file(&host).unwrap();
        bad.insert(b"/x", Inode { meta: meta(0o644, 0), kind: Kind::File(content) }).unwrap();
        assert!(write_to_path(&bad, Compression::Gzip, None, &path).is_err());
        assert!(std::fs::read(&path).unwrap() == before);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn empty_tree() {
        let tree = Tree::new(0);
        let archive = cpio_of(&tree);
        let e = parse(&archive);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, ".");
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            let r = write(&tree, c, None, &mut out).unwrap();
            assert_eq!(r.entries, 1);
            let dec = match c {
                Compression::Gzip => {
                    let mut d = Vec::new();
                    flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut d).unwrap();
                    d
                }
                _ => zstd::decode_all(&out[..]).unwrap(),
            };
            assert!(dec == archive);
        }
    }

    #[test]
    fn errors_name_the_entry() {
        let mut tree = Tree::new(0);
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        std::fs::write(&host, b"x").unwrap();
        let content = Content::host(&host).unwrap();
        std::fs::remove_file(&host).unwrap();
        tree.insert(b"/etc/gone", Inode { meta: meta(0o644, 0), kind: Kind::File(content) }).unwrap();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let err = write(&tree, c, None, &mut Vec::new()).unwrap_err();
            assert!(matches!(&err, InitramfsError::Read { path, .. } if path == "/etc/gone"), "{c:?}: {err}");
        }
        let err = write(&tree, Compression::Gzip, Some(10), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, InitramfsError::Level { level: 10, .. }));
    }
}

#[cfg(test)]
mod zstd_tests {
    use super::*;
    use crate::tree::{Inode, Meta};

    /// zstd's multithreaded output must not depend on the worker count, on
    /// an input spanning several zstd jobs (a job is a few MiB at level 3).
    #[test]
    fn zstd_output_does_not_depend_on_workers_across_jobs() {
        let mut tree = Tree::new(0);
        let mut x: u32 = 1;
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if (i >> 16) % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    (i % 61) as u8
                }
            })
            .collect();
        tree.insert(b"/big", Inode { meta: Meta::new(0o644, 0), kind: Kind::File(Content::bytes(data)) }).unwrap();
        let mut one = Vec::new();
        write_with_threads(&tree, Compression::Zstd, None, 1, &mut one).unwrap();
        for threads in [2, 3] {
            let mut other = Vec::new();
            write_with_threads(&tree, Compression::Zstd, None, threads, &mut other).unwrap();
            assert!(other == one, "zstd with {threads} workers differs from 1 worker");
        }
    }

    /// The zstd output is exactly the cpio compressed in one go: nothing (such
    /// as the cpio crate's flush after each entry) cuts the stream into blocks.
    #[test]
    fn zstd_output_is_the_cpio_compressed_in_one_go() {
        let mut tree = Tree::new(0);
        for i in 0..500u32 {
            let path = format!("/d{}/file{i}", i % 7);
            let body = format!("entry {i}: some text that repeats across entries\n").repeat(1 + i as usize % 5);
            tree.insert(path.as_bytes(), Inode { meta: Meta::new(0o644, 0), kind: Kind::File(Content::bytes(body)) }).unwrap();
        }
        let mut cpio = Vec::new();
        write(&tree, Compression::None, None, &mut cpio).unwrap();
        let mut ours = Vec::new();
        write_with_threads(&tree, Compression::Zstd, None, 2, &mut ours).unwrap();
        let mut e = zstd::stream::Encoder::new(Vec::new(), ZSTD_DEFAULT_LEVEL as i32).unwrap();
        e.multithread(2).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(&cpio).unwrap();
        let reference = e.finish().unwrap();
        assert_eq!(ours.len(), reference.len());
        assert!(ours == reference);
    }
}
