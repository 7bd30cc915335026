//! Archives from arbitrary entries, written byte by byte (the `tar` crate's
//! builder refuses `..` and other names a hostile archive has): ustar
//! headers with GNU long names and pax records, `ar` for `.deb`, and the
//! two container image layouts the `oci` layer reads.

use arbitrary::{Arbitrary, Result, Unstructured};
use sha2::{Digest, Sha256};

/// Names the tree code has opinions about.
pub const NAMES: &[&str] = &[
    "a",
    "a/b",
    "./a",
    "a/",
    "..",
    "../x",
    "a/../../x",
    "/abs",
    "etc/passwd",
    "bin",
    "bin/sh",
    "usr/lib/x",
    ".wh.a",
    "a/.wh.b",
    "a/.wh..wh..opq",
    "dev/null",
    "x/y/z",
    "",
    ".",
    "a//b",
    "lnk",
    "lnk/x",
    "d",
    "d/f",
];

/// Link targets, same idea.
pub const TARGETS: &[&str] = &["a", "/", "/etc", "..", "../..", "../../etc", "a/b", "lnk", "/abs/x", "d", "", "."];

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Contiguous,
    /// Any type byte.
    Other(u8),
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
            Kind::Contiguous => b'7',
            Kind::Other(b) => b,
        }
    }
}

/// One tar entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    /// Pax records (`key`, `value`) in an `x` header before it.
    pub pax: Vec<(String, Vec<u8>)>,
    /// GNU `L` (long name) instead of the header's 100 bytes.
    pub gnu_long: bool,
    /// The size field says this instead of the data's length.
    pub size_lie: Option<u64>,
}

fn pick<'a>(u: &mut Unstructured<'a>, dict: &[&str]) -> Result<Vec<u8>> {
    Ok(if u.ratio(3, 4)? { u.choose(dict)?.as_bytes().to_vec() } else { u.arbitrary::<Vec<u8>>()? })
}

impl<'a> Arbitrary<'a> for Entry {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let name = pick(u, NAMES)?;
        let kind = u.arbitrary()?;
        let pax_n = if u.ratio(1, 4)? { u.int_in_range(0..=3)? } else { 0 };
        let mut pax = Vec::new();
        for _ in 0..pax_n {
            let k = match u.int_in_range(0..=6)? {
                0 => "path".to_string(),
                1 => "linkpath".to_string(),
                2 => "uid".to_string(),
                3 => "size".to_string(),
                4 => "SCHILY.xattr.security.capability".to_string(),
                5 => "SCHILY.xattr.user.x".to_string(),
                _ => u.arbitrary()?,
            };
            pax.push((k, u.arbitrary()?));
        }
        Ok(Entry {
            name,
            kind,
            mode: u.arbitrary()?,
            uid: if u.ratio(3, 4)? { u.int_in_range(0..=70000)? } else { u.arbitrary()? },
            gid: if u.ratio(3, 4)? { u.int_in_range(0..=70000)? } else { u.arbitrary()? },
            mtime: u.arbitrary()?,
            link: pick(u, TARGETS)?,
            data: u.arbitrary()?,
            pax,
            gnu_long: u.ratio(1, 8)?,
            size_lie: if u.ratio(1, 16)? { Some(u.arbitrary()?) } else { None },
        })
    }
}

/// An octal field of `b.len()` bytes (NUL-terminated when it fits; base-256
/// when it does not, as GNU tar writes large numbers).
fn octal(b: &mut [u8], v: u64) {
    let w = b.len() - 1;
    let s = format!("{v:o}");
    if s.len() <= w {
        let s = format!("{v:0w$o}");
        b[..w].copy_from_slice(s.as_bytes());
        b[w] = 0;
    } else {
        b.fill(0);
        b[0] = 0x80;
        let be = v.to_be_bytes();
        let n = be.len().min(b.len() - 1);
        let l = b.len();
        b[l - n..].copy_from_slice(&be[8 - n..]);
    }
}

fn header(name: &[u8], flag: u8, mode: u32, uid: u64, gid: u64, size: u64, mtime: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], (mode & 0o7777_7777) as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = flag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
    h
}

fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_block(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        // "LEN key=value\n" where LEN counts itself.
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

/// A tar archive of `entries`, with the two zero blocks at the end.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let body = pax_block(&e.pax);
            out.extend_from_slice(&header(b"PaxHeader", b'x', 0o644, 0, 0, body.len() as u64, 0, b""));
            push_data(&mut out, &body);
        }
        if e.gnu_long {
            let mut n = e.name.clone();
            n.push(0);
            out.extend_from_slice(&header(b"././@LongLink", b'L', 0o644, 0, 0, n.len() as u64, 0, b""));
            push_data(&mut out, &n);
        }
        let data: &[u8] = match e.kind {
            Kind::File | Kind::Contiguous | Kind::Other(_) => &e.data,
            _ => &[],
        };
        let size = e.size_lie.unwrap_or(data.len() as u64);
        out.extend_from_slice(&header(&e.name, e.kind.flag(), e.mode, e.uid, e.gid, size, e.mtime, &e.link));
        push_data(&mut out, data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An `ar` archive (`.deb`) of `(name, data)` members.
pub fn ar(members: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let mut h = [b' '; 60];
        let n = name.len().min(16);
        h[..n].copy_from_slice(&name[..n]);
        h[16..17].copy_from_slice(b"0");
        h[28..29].copy_from_slice(b"0");
        h[34..35].copy_from_slice(b"0");
        h[40..46].copy_from_slice(b"100644");
        let size = data.len().to_string();
        h[48..48 + size.len().min(10)].copy_from_slice(&size.as_bytes()[..size.len().min(10)]);
        h[58] = b'`';
        h[59] = b'\n';
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A regular file entry.
pub fn file(name: &str, data: Vec<u8>) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        link: Vec::new(),
        data,
        pax: Vec::new(),
        gnu_long: false,
        size_lie: None,
    }
}
