//! The `oci` output: one tree of the recipe as a container image,
//! `NAME.oci.tar`.
//!
//! # What is written
//!
//! One tar, the same bytes for the same recipe, holding:
//!
//! ```text
//! blobs/                      (directory)
//! blobs/sha256/               (directory)
//! blobs/sha256/<layer>        the tree as one uncompressed layer tar
//! blobs/sha256/<config>       the image config (application/vnd.oci.image.config.v1+json)
//! blobs/sha256/<manifest>     the image manifest (application/vnd.oci.image.manifest.v1+json)
//! index.json                  one manifest descriptor, linux/amd64, annotated with the tag
//! manifest.json               [{"Config": "blobs/sha256/<config>", "RepoTags": [TAG], "Layers": ["blobs/sha256/<layer>"]}]
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! ```
//!
//! # Why two shapes in one tar
//!
//! `oci-layout`, `index.json` and the blobs are an OCI image layout: what
//! `skopeo copy oci-archive:NAME.oci.tar …` (and so any registry), podman
//! and containerd read. Docker before 25 (Debian 12 has 20.10) knows only
//! its own `docker save` format, whose `manifest.json` names the config
//! and the layer tars by path; those paths are the layout's blobs, so no
//! byte is stored twice. Docker 25 and later writes exactly this shape
//! from `docker save`, and `docker load` reads either. `index.json`
//! carries the tag the way both sides look for it: the tag alone in
//! `org.opencontainers.image.ref.name` (`skopeo … oci-archive:PATH:1.22`)
//! and the fully qualified name in `io.containerd.image.name`
//! (`docker.io/library/nginx:1.22`); `RepoTags` has Docker's short form
//! (`nginx:1.22`).
//!
//! # The layer
//!
//! An uncompressed tar (`application/vnd.oci.image.layer.v1.tar`), so its
//! digest is its `diff_id` and nothing depends on a compressor's version;
//! `skopeo copy` and `docker push` gzip it on the way to a registry.
//! Entries come in the tree's walk order (parents first, names sorted), as
//! the initramfs's do; paths are relative without `./`
//! (`etc/passwd`, directories with a trailing `/`, as Docker's own layers).
//! The root directory is an entry (`./`) only when its mode, owner, mtime
//! or xattrs differ from what a runtime assumes (0755 root, the epoch, none).
//! Each entry is a POSIX ustar header with the tree's numeric uid and gid
//! (no user or group names), its permission bits with setuid, setgid and
//! sticky, and its mtime (already clamped to `source_date_epoch`; whole
//! seconds). A hardlinked inode is a regular entry at its first name and
//! a link entry (type `1`) at each later one; symlinks keep their target
//! verbatim; character and block devices their numbers; fifos are type `6`.
//! A pax extended header (`x`) precedes an entry whose path or link target
//! is longer than 100 bytes (`path`, `linkpath`), whose uid or gid or size
//! or mtime does not fit the ustar field, and that has xattrs
//! (`SCHILY.xattr.NAME`, value bytes verbatim, as GNU tar and Docker write
//! them).
//!
//! The layer is streamed into the output file where its blob goes, hashed
//! on the way; its tar header (which names the digest) is written into the
//! 512 bytes left for it once the layer is done, then the config and
//! manifest (which name the layer's digest) follow. No copy, no temp file,
//! and memory does not grow with the tree's data: the output file itself
//! is the pipeline's temp file, renamed when the whole build succeeded.
//!
//! # Not supported
//!
//! - sockets: tar has no type for them; they are left out, as GNU tar does;
//! - holes: a sparse file is written whole, its holes as zeros (GNU sparse
//!   entries are not read by every runtime);
//! - sub-second mtimes (ustar has seconds);
//! - a name starting with `.wh.`: in a layer it is a whiteout, which would
//!   delete a file rather than create one; such a tree is refused;
//! - more than one layer, other platforms than linux/amd64, compressed
//!   layers, signatures, and config keys other than the recipe's
//!   (`Volumes`, `StopSignal`, `Healthcheck`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::recipe::{ImageRef, OciImage};
use crate::tree::{show, Content, InodeId, Kind, Meta, Tree};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Errors of the container image writer; tree paths shown with a leading slash.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: reading the file content from {origin}")]
    Read {
        path: String,
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: a name starting with `.wh.` is a whiteout in a container layer (a runtime would delete `{target}` instead of creating this entry): rename or remove it in the tree"
    )]
    Whiteout { path: String, target: String },
    #[error("{path}: device number {major}:{minor} does not fit a tar header (at most 2097151 each)")]
    Device { path: String, major: u32, minor: u32 },
    #[error("writing the container image")]
    Write(#[source] io::Error),
}

/// What [`write`] produced: the identities `docker images`, `skopeo
/// inspect` and a registry show. Recorded in the build manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OciReport {
    /// The tag as `docker load` names the image (`nginx:1.22`).
    pub tag: String,
    /// `sha256:…` of the image manifest: the image's digest (`skopeo
    /// inspect`'s `Digest`), until a copy recompresses the layer.
    pub manifest_digest: String,
    /// `sha256:…` of the config: Docker's image ID.
    pub config_digest: String,
    /// `sha256:…` of the layer tar, which is also its `diff_id`.
    pub layer_digest: String,
    pub layer_size: u64,
    /// Entries in the layer (pax headers not counted).
    pub layer_entries: u64,
    /// Sockets of the tree that were left out.
    #[serde(skip_serializing_if = "is_zero")]
    pub sockets_skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

const BLOCK: u64 = 512;
/// Largest value of an 11-digit octal field (size, mtime).
const MAX_OCTAL_11: u64 = 0o77777777777;
/// Largest value of a 7-digit octal field (uid, gid, device numbers).
const MAX_OCTAL_7: u64 = 0o7777777;

/// Write the image of `tree` into `out` (an empty file), configured by
/// `image` and tagged `reference`; every time in it is `epoch`'s (entries:
/// their mtime, already clamped to it).
pub fn write(tree: &Tree, image: &OciImage, reference: &ImageRef, epoch: i64, out: &File) -> Result<OciReport, OciError> {
    let mtime = epoch.clamp(0, MAX_OCTAL_11 as i64) as u64;
    let mut pos = 0;
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = header(dir.as_bytes(), tar::EntryType::Directory, 0o755, 0, 0, mtime, 0, b"");
        out.write_all_at(h.as_bytes(), pos).map_err(OciError::Write)?;
        pos += BLOCK;
    }

    // The layer, straight into its place after a header block left for it.
    let header_at = pos;
    let data_at = header_at + BLOCK;
    let mut sink = BufWriter::with_capacity(1 << 20, HashAt { file: out, pos: data_at, hash: Sha256::new() });
    let (layer_entries, sockets_skipped) = write_layer(tree, &mut sink)?;
    let sink = sink.into_inner().map_err(|e| OciError::Write(e.into_error()))?;
    let layer_size = sink.pos - data_at;
    let layer_hex = hex::encode(sink.hash.finalize());
    let h = header(blob_path(&layer_hex).as_bytes(), tar::EntryType::Regular, 0o644, 0, 0, mtime, layer_size, b"");
    out.write_all_at(h.as_bytes(), header_at).map_err(OciError::Write)?;
    let pad = padding(layer_size);
    out.write_all_at(&[0u8; BLOCK as usize][..pad], data_at + layer_size).map_err(OciError::Write)?;
    pos = data_at + layer_size + pad as u64;

    let config = to_json(&config_json(image, epoch, &layer_hex));
    let config_hex = sha256_hex(&config);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config_hex, config.len() as u64),
        "layers": [descriptor(MEDIA_LAYER, &layer_hex, layer_size)],
    }));
    let manifest_hex = sha256_hex(&manifest);
    let mut m = descriptor(MEDIA_MANIFEST, &manifest_hex, manifest.len() as u64);
    m["annotations"] = json!({
        "io.containerd.image.name": reference.normalized(),
        "org.opencontainers.image.ref.name": reference.tag(),
    });
    m["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index = to_json(&json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [m]}));
    let docker = to_json(&json!([{
        "Config": blob_path(&config_hex),
        "RepoTags": [reference.familiar()],
        "Layers": [blob_path(&layer_hex)],
    }]));
    let files: [(String, &[u8]); 5] = [
        (blob_path(&config_hex), &config),
        (blob_path(&manifest_hex), &manifest),
        ("index.json".into(), &index),
        ("manifest.json".into(), &docker),
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
    ];
    for (name, data) in files {
        let mut b = header(name.as_bytes(), tar::EntryType::Regular, 0o644, 0, 0, mtime, data.len() as u64, b"").as_bytes().to_vec();
        b.extend_from_slice(data);
        b.resize(b.len() + padding(data.len() as u64), 0);
        out.write_all_at(&b, pos).map_err(OciError::Write)?;
        pos += b.len() as u64;
    }
    // The end of the archive: two zero blocks.
    out.write_all_at(&[0u8; 2 * BLOCK as usize], pos).map_err(OciError::Write)?;
    Ok(OciReport {
        tag: reference.familiar(),
        manifest_digest: format!("sha256:{manifest_hex}"),
        config_digest: format!("sha256:{config_hex}"),
        layer_digest: format!("sha256:{layer_hex}"),
        layer_size,
        layer_entries,
        sockets_skipped,
    })
}

fn blob_path(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

fn descriptor(media_type: &str, hex: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size})
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Compact JSON. Object keys come out sorted (serde_json's map is a
/// `BTreeMap`: the workspace does not turn on `preserve_order`; a unit test
/// checks the bytes), so the same image gives the same digests.
fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialize")
}

/// The image config: the recipe's run configuration (only the keys it
/// gives), the one layer's diff_id, and `created` at the epoch.
fn config_json(image: &OciImage, epoch: i64, layer_hex: &str) -> Value {
    let mut c = Map::new();
    let mut put = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    if let Some(v) = &image.entrypoint {
        put("Entrypoint", json!(v));
    }
    if let Some(v) = &image.cmd {
        put("Cmd", json!(v));
    }
    if let Some(v) = &image.env {
        put("Env", json!(v));
    }
    if let Some(v) = &image.working_dir {
        put("WorkingDir", json!(v));
    }
    if let Some(v) = &image.user {
        put("User", json!(v));
    }
    if let Some(v) = &image.exposed_ports {
        // Validated: every entry is a port.
        let ports: Map<String, Value> = v.iter().filter_map(|p| crate::recipe::validate::exposed_port(p)).map(|p| (p, json!({}))).collect();
        put("ExposedPorts", Value::Object(ports));
    }
    if let Some(v) = &image.labels {
        put("Labels", json!(v));
    }
    let created = rfc3339(epoch);
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": c,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created": created, "created_by": "build-image"}],
    })
}

/// `2023-11-14T22:13:20Z` (UTC; times before 1970 are 1970).
pub fn rfc3339(secs: i64) -> String {
    let secs = secs.max(0);
    let (y, m, d) = crate::fs::fat::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Zero bytes after `len` bytes of data, to the next 512-byte block.
fn padding(len: u64) -> usize {
    ((BLOCK - len % BLOCK) % BLOCK) as usize
}

/// A ustar header. Names and link targets longer than 100 bytes are cut
/// here; the caller puts the whole one into a pax header before it.
#[allow(clippy::too_many_arguments)]
fn header(name: &[u8], kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    let u = h.as_ustar_mut().expect("a ustar header");
    let n = name.len().min(u.name.len());
    u.name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(u.linkname.len());
    u.linkname[..l].copy_from_slice(&link[..l]);
    u.set_device_major(0);
    u.set_device_minor(0);
    h.set_cksum();
    h
}

/// One pax record, `LEN KEY=VALUE\n`, LEN counting the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest;
    loop {
        let l = rest + len.to_string().len();
        if l == len {
            break;
        }
        len = l;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A `Write` that writes positionally into a file from `pos` on, hashing
/// what passes (wrap it in a `BufWriter`).
struct HashAt<'a> {
    file: &'a File,
    pos: u64,
    hash: Sha256,
}

impl Write for HashAt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.hash.update(buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the root's metadata is what a runtime gives a layer's root
/// anyway, so that it needs no entry.
fn default_root(meta: &Meta, epoch: i64) -> bool {
    meta.mode == 0o755 && meta.uid == 0 && meta.gid == 0 && meta.mtime == epoch && meta.xattrs.is_empty()
}

/// Write the layer tar of `tree`; returns (entries, sockets left out).
fn write_layer(tree: &Tree, w: &mut dyn Write) -> Result<(u64, u64), OciError> {
    let counts = tree.link_counts();
    // The first name of each hardlinked inode, for the link entries of the others.
    let mut first: BTreeMap<InodeId, Vec<u8>> = BTreeMap::new();
    let mut buf = vec![0u8; 256 << 10];
    let (mut entries, mut sockets) = (0u64, 0u64);
    tree.try_walk(|v| -> Result<(), OciError> {
        let inode = tree.inode(v.ino);
        let shown = || show(v.path);
        let is_dir = matches!(inode.kind, Kind::Dir(_));
        let mut name = v.path.to_vec();
        if v.depth == 0 {
            if default_root(&inode.meta, tree.epoch()) {
                return Ok(());
            }
            name = b"./".to_vec();
        } else if let Some(target) = v.name.strip_prefix(b".wh.") {
            return Err(OciError::Whiteout { path: shown(), target: String::from_utf8_lossy(target).into_owned() });
        } else if is_dir {
            name.push(b'/');
        }
        if matches!(inode.kind, Kind::Socket) {
            sockets += 1;
            return Ok(());
        }
        let earlier = if !is_dir && counts[v.ino] > 1 {
            match first.entry(v.ino) {
                std::collections::btree_map::Entry::Occupied(e) => Some(e.get().clone()),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v.path.to_vec());
                    None
                }
            }
        } else {
            None
        };
        use tar::EntryType as T;
        let (kind, size, link, dev): (T, u64, &[u8], Option<(u32, u32)>) = match (&earlier, &inode.kind) {
            (Some(target), _) => (T::Link, 0, target.as_slice(), None),
            (None, Kind::Dir(_)) => (T::Directory, 0, b"", None),
            (None, Kind::File(c)) => (T::Regular, c.len(), b"", None),
            (None, Kind::Symlink(t)) => (T::Symlink, 0, t.as_slice(), None),
            (None, Kind::CharDev { major, minor }) => (T::Char, 0, b"", Some((*major, *minor))),
            (None, Kind::BlockDev { major, minor }) => (T::Block, 0, b"", Some((*major, *minor))),
            (None, Kind::Fifo) => (T::Fifo, 0, b"", None),
            (None, Kind::Socket) => unreachable!("left out above"),
        };
        let m = &inode.meta;
        let mtime = m.mtime.max(0) as u64;
        let (uid, gid) = (u64::from(m.uid), u64::from(m.gid));
        let mut pax = Vec::new();
        if name.len() > 100 {
            pax_record(&mut pax, b"path", &name);
        }
        if link.len() > 100 {
            pax_record(&mut pax, b"linkpath", link);
        }
        for (key, value, max) in
            [(&b"uid"[..], uid, MAX_OCTAL_7), (b"gid", gid, MAX_OCTAL_7), (b"size", size, MAX_OCTAL_11), (b"mtime", mtime, MAX_OCTAL_11)]
        {
            if value > max {
                pax_record(&mut pax, key, value.to_string().as_bytes());
            }
        }
        for (k, val) in &m.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, val);
        }
        let out = |w: &mut dyn Write, b: &[u8]| w.write_all(b).map_err(OciError::Write);
        if !pax.is_empty() {
            let base = if v.name.is_empty() { &b"."[..] } else { v.name };
            let mut pname = b"PaxHeaders/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(100 - pname.len())]);
            out(w, header(&pname, T::XHeader, 0o644, 0, 0, mtime.min(MAX_OCTAL_11), pax.len() as u64, b"").as_bytes())?;
            pax.resize(pax.len() + padding(pax.len() as u64), 0);
            out(w, &pax)?;
        }
        let mut h = header(&name, kind, m.mode, uid, gid, mtime, size, link);
        if let Some((major, minor)) = dev {
            if u64::from(major) > MAX_OCTAL_7 || u64::from(minor) > MAX_OCTAL_7 {
                return Err(OciError::Device { path: shown(), major, minor });
            }
            let u = h.as_ustar_mut().expect("a ustar header");
            u.set_device_major(major);
            u.set_device_minor(minor);
            h.set_cksum();
        }
        out(w, h.as_bytes())?;
        if let (T::Regular, Kind::File(content)) = (kind, &inode.kind) {
            copy_content(content, w, &mut buf, &shown)?;
            out(w, &[0u8; BLOCK as usize][..padding(size)])?;
        }
        entries += 1;
        Ok(())
    })?;
    w.write_all(&[0u8; 2 * BLOCK as usize]).map_err(OciError::Write)?;
    w.flush().map_err(OciError::Write)?;
    Ok((entries, sockets))
}

/// Stream a file's content (holes read as zeros) into `w`.
fn copy_content(content: &Content, w: &mut dyn Write, buf: &mut [u8], shown: &dyn Fn() -> String) -> Result<(), OciError> {
    crate::files::copy_content(content, content.len(), w, buf).map_err(|e| match e {
        crate::files::CopyError::Read(source) => OciError::Read { path: shown(), origin: content.origin(), source },
        crate::files::CopyError::Write(e) => OciError::Write(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Inode, Meta};
    use std::collections::BTreeMap;
    use std::io::Read;

    const EPOCH: i64 = 1_700_000_000;

    fn put(t: &mut Tree, path: &[u8], mode: u32, (uid, gid): (u32, u32), kind: Kind) -> InodeId {
        let meta = Meta { uid, gid, ..Meta::new(mode, EPOCH) };
        t.insert(path, Inode { meta, kind }).unwrap()
    }

    /// Every kind of entry the layer can hold, with the cases that need pax
    /// headers (long names and link targets, a uid over 7 octal digits,
    /// xattrs with binary values), hardlinks (one at a long name), a
    /// sparse host file and an mtime before the epoch.
    fn sample_tree(host: &std::path::Path) -> Tree {
        let mut t = Tree::new(EPOCH);
        let root = (0, 0);
        put(&mut t, b"/bin", 0o755, root, Kind::Dir(BTreeMap::new()));
        put(&mut t, b"/bin/tool", 0o4755, root, Kind::File(Content::bytes(*b"#!/bin/sh\necho tool\n")));
        put(&mut t, b"/bin/sh", 0o777, root, Kind::Symlink(b"tool".to_vec()));
        put(&mut t, b"/tmp", 0o1777, root, Kind::Dir(BTreeMap::new()));
        put(&mut t, b"/home/user", 0o700, (1000, 1000), Kind::Dir(BTreeMap::new()));
        put(&mut t, b"/home/user/.profile", 0o640, (1000, 100), Kind::File(Content::bytes(*b"export A=1\n")));
        put(&mut t, b"/srv/big", 0o600, (3_000_000, 2_500_000), Kind::File(Content::bytes(crate_bytes(7, 300_000))));
        // A sparse host file: 1 MiB hole, data, hole to 2 MiB + 5.
        let sparse = host.join("sparse");
        {
            let f = File::create(&sparse).unwrap();
            f.set_len((2 << 20) + 5).unwrap();
            f.write_all_at(b"in the middle", 1 << 20).unwrap();
        }
        put(&mut t, b"/srv/sparse", 0o644, root, Kind::File(Content::host(&sparse).unwrap()));
        put(&mut t, b"/dev/null", 0o666, root, Kind::CharDev { major: 1, minor: 3 });
        put(&mut t, b"/dev/sda1", 0o660, (0, 6), Kind::BlockDev { major: 8, minor: 1 });
        put(&mut t, b"/run/fifo", 0o620, root, Kind::Fifo);
        let long_dir = format!("/opt/{}/{}", "d".repeat(60), "e".repeat(60));
        let long_file = format!("{long_dir}/{}.txt", "f".repeat(80));
        put(&mut t, long_file.as_bytes(), 0o644, root, Kind::File(Content::bytes(*b"long name\n")));
        put(&mut t, b"/opt/longlink", 0o777, root, Kind::Symlink(format!("..{long_file}").into_bytes()));
        // Hardlinks: /etc/a is the first name; a later one is long.
        let a = put(&mut t, b"/etc/a", 0o644, (5, 5), Kind::File(Content::bytes(*b"linked\n")));
        t.hardlink(b"/etc/b", b"/etc/a").unwrap();
        t.hardlink(format!("{long_dir}/{}", "h".repeat(90)).as_bytes(), b"/etc/a").unwrap();
        t.hardlink(b"/etc/sh-link", b"/bin/sh").unwrap();
        let mut caps = Meta::new(0o755, EPOCH);
        caps.xattrs.insert(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        caps.xattrs.insert(b"user.note".to_vec(), b"two\nlines=and more".to_vec());
        caps.mtime = EPOCH - 86_400 * 365;
        t.insert(b"/bin/ping", Inode { meta: caps, kind: Kind::File(Content::bytes(*b"\x7fELF")) }).unwrap();
        t.insert(b"/empty", Inode { meta: Meta::new(0o644, EPOCH), kind: Kind::File(Content::bytes(Vec::new())) }).unwrap();
        assert_eq!(t.link_counts()[a], 3);
        t
    }

    fn crate_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn image() -> OciImage {
        serde_json::from_value(serde_json::json!({
            "tree": "root", "entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hi"], "env": ["PATH=/bin", "A=b c"],
            "working_dir": "/srv", "user": "1000:1000", "exposed_ports": ["80", "53/udp"], "labels": {"org.example.b": "2", "a": "1"}
        }))
        .unwrap()
    }

    fn write_to(tree: &Tree, image: &OciImage, tag: &str, path: &std::path::Path) -> OciReport {
        let f = File::create(path).unwrap();
        write(tree, image, &ImageRef::parse(tag).unwrap(), EPOCH, &f).unwrap()
    }

    /// What a tree holds, name by name: kind with its payload, mode, owner,
    /// mtime, xattrs, and which earlier name shares the inode.
    fn listing(t: &Tree) -> Vec<String> {
        let mut seen: BTreeMap<InodeId, String> = BTreeMap::new();
        let mut out = Vec::new();
        t.walk(|v| {
            let i = t.inode(v.ino);
            let path = show(v.path);
            let payload = match &i.kind {
                Kind::Dir(_) => "dir".to_string(),
                Kind::File(c) => {
                    let mut b = vec![0u8; c.len() as usize];
                    c.open().unwrap().read_exact_at(&mut b, 0).unwrap();
                    format!("file {}", sha256_hex(&b))
                }
                Kind::Symlink(target) => format!("symlink {}", String::from_utf8_lossy(target)),
                Kind::CharDev { major, minor } => format!("char {major}:{minor}"),
                Kind::BlockDev { major, minor } => format!("block {major}:{minor}"),
                Kind::Fifo => "fifo".into(),
                Kind::Socket => "socket".into(),
            };
            let link = match (&i.kind, seen.get(&v.ino)) {
                (Kind::Dir(_), _) => String::new(),
                (_, Some(first)) => format!(" = {first}"),
                (_, None) => {
                    seen.insert(v.ino, path.clone());
                    String::new()
                }
            };
            let m = &i.meta;
            out.push(format!("{path} {payload} {:o} {}:{} {} {:?}{link}", m.mode, m.uid, m.gid, m.mtime, m.xattrs));
        });
        out
    }

    /// The tar's members by name (a small test archive, read whole).
    fn members(path: &std::path::Path) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut a = tar::Archive::new(File::open(path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (String::from_utf8(e.path_bytes().into_owned()).unwrap(), e.header().clone(), data)
            })
            .collect()
    }

    #[test]
    fn round_trip_through_the_oci_layer_reader() {
        let d = tempfile::tempdir().unwrap();
        let tree = sample_tree(d.path());
        let p = d.path().join("img.oci.tar");
        let report = write_to(&tree, &image(), "example.com/app:1.0", &p);
        let mut back = Tree::new(EPOCH);
        let config = crate::tree::oci::apply_oci(&mut back, &p, "/", d.path()).unwrap();
        let (want, got) = (listing(&tree), listing(&back));
        assert!(want.len() > 20, "{want:#?}");
        assert_eq!(got, want);
        assert_eq!(config.argv(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(config.env, ["PATH=/bin", "A=b c"]);
        assert_eq!((config.working_dir.as_deref(), config.user.as_deref()), (Some("/srv"), Some("1000:1000")));
        // Every name but the default root, each hardlinked name once more.
        assert_eq!(report.layer_entries, want.len() as u64 - 1);
        assert_eq!(report.tag, "example.com/app:1.0");
    }

    #[test]
    fn a_root_that_is_not_the_default_is_an_entry() {
        let d = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(EPOCH);
        put(&mut tree, b"/", 0o700, (0, 0), Kind::Dir(BTreeMap::new()));
        put(&mut tree, b"/x", 0o644, (0, 0), Kind::File(Content::bytes(*b"x")));
        let p = d.path().join("img.oci.tar");
        write_to(&tree, &image(), "app", &p);
        let layer = members(&p).into_iter().find(|(_, h, _)| h.size().unwrap() > 1024).unwrap().2;
        let names: Vec<String> = tar::Archive::new(&layer[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(names, ["./", "x"]);
        let mut back = Tree::new(EPOCH);
        crate::tree::oci::apply_oci(&mut back, &p, "/", d.path()).unwrap();
        assert_eq!(listing(&back), listing(&tree));
        assert_eq!(back.inode(Tree::ROOT).meta.mode, 0o700);
    }

    /// The layout's digests and sizes are those of the blobs' bytes, each
    /// blob's name is its sha256, and `manifest.json` (docker save) names
    /// the same config and layer.
    #[test]
    fn both_shapes_point_at_the_same_verified_blobs() {
        let d = tempfile::tempdir().unwrap();
        let tree = sample_tree(d.path());
        let p = d.path().join("img.oci.tar");
        let report = write_to(&tree, &image(), "nginx:1.22", &p);
        let m = members(&p);
        let names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(names[5..], ["index.json", "manifest.json", "oci-layout"]);
        let mut blobs = BTreeMap::new();
        for (name, h, data) in &m {
            assert_eq!(h.mtime().unwrap(), EPOCH as u64, "{name}");
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256_hex(data), hex, "a blob is named by its sha256");
                blobs.insert(format!("sha256:{hex}"), data.clone());
            }
        }
        assert_eq!(blobs.len(), 3);
        let file = |n: &str| m.iter().find(|(name, _, _)| name == n).unwrap().2.clone();
        let json = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
        assert_eq!(file("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index = json(&file("index.json"));
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_INDEX);
        let [md] = index["manifests"].as_array().unwrap().as_slice() else { panic!("one manifest: {index}") };
        assert_eq!(md["annotations"]["org.opencontainers.image.ref.name"], "1.22");
        assert_eq!(md["annotations"]["io.containerd.image.name"], "docker.io/library/nginx:1.22");
        assert_eq!(md["platform"], serde_json::json!({"architecture": "amd64", "os": "linux"}));
        let check = |desc: &Value, media: &str| -> Vec<u8> {
            assert_eq!(desc["mediaType"], media);
            let b = blobs[desc["digest"].as_str().unwrap()].clone();
            assert_eq!(desc["size"], b.len());
            b
        };
        let manifest = json(&check(md, MEDIA_MANIFEST));
        assert_eq!(md["digest"], report.manifest_digest);
        assert_eq!(manifest["schemaVersion"], 2);
        let config_bytes = check(&manifest["config"], MEDIA_CONFIG);
        let config = json(&config_bytes);
        let [layer] = manifest["layers"].as_array().unwrap().as_slice() else { panic!("one layer: {manifest}") };
        let layer_bytes = check(layer, MEDIA_LAYER);
        assert_eq!(layer["digest"], report.layer_digest);
        assert_eq!(config["rootfs"], serde_json::json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer_bytes))]}));
        assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("amd64"), Some("linux")));
        // 1700000000 s after 1970 is 2023-11-14 22:13:20 UTC (`date -u -d @1700000000`).
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        assert_eq!(config["history"], serde_json::json!([{"created": "2023-11-14T22:13:20Z", "created_by": "build-image"}]));
        assert_eq!(config["config"]["ExposedPorts"], serde_json::json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(config["config"]["Labels"], serde_json::json!({"a": "1", "org.example.b": "2"}));
        // Sorted keys, compact: the bytes are what the digests cover.
        let text = String::from_utf8(config_bytes).unwrap();
        assert!(text.starts_with(r#"{"architecture":"amd64","config":{"Cmd":["echo hi"],"Entrypoint":["/bin/sh","-c"],"Env":"#), "{text}");
        let at: Vec<usize> = ["architecture", "config", "created", "history", "os", "rootfs"]
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k}: {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "top-level keys out of order: {text}");
        assert!(!text.contains(": ") && !text.contains(", ") && !text.contains('\n'), "compact: {text}");
        // docker save's view of the same blobs.
        let docker = json(&file("manifest.json"));
        assert_eq!(
            docker,
            serde_json::json!([{
                "Config": format!("blobs/sha256/{}", manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:")),
                "RepoTags": ["nginx:1.22"],
                "Layers": [format!("blobs/sha256/{}", sha256_hex(&layer_bytes))],
            }])
        );
        // The layer: relative names, no `./`, directories with a slash, and
        // the tree's times (clamped to the epoch).
        let mut a = tar::Archive::new(&layer_bytes[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            assert!(!name.starts_with('/') && !name.starts_with("./"), "{name}");
            assert_eq!(name.ends_with('/'), e.header().entry_type() == tar::EntryType::Directory, "{name}");
            assert!(e.header().mtime().unwrap() <= EPOCH as u64);
        }
    }

    #[test]
    fn only_the_keys_given_and_the_same_bytes_twice() {
        let d = tempfile::tempdir().unwrap();
        let tree = sample_tree(d.path());
        let minimal: OciImage = serde_json::from_value(serde_json::json!({"tree": "root", "env": []})).unwrap();
        let (a, b) = (d.path().join("a.tar"), d.path().join("b.tar"));
        let ra = write_to(&tree, &minimal, "app", &a);
        let rb = write_to(&tree.clone(), &minimal, "app", &b);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "two writes differ");
        assert_eq!(ra, rb);
        let config =
            members(&a).into_iter().find(|(n, _, _)| format!("sha256:{}", n.trim_start_matches("blobs/sha256/")) == ra.config_digest);
        let config: Value = serde_json::from_slice(&config.unwrap().2).unwrap();
        assert_eq!(config["config"], serde_json::json!({"Env": []}));
        // Another tag: another index and manifest.json, the same image.
        let c = d.path().join("c.tar");
        let rc = write_to(&tree, &minimal, "app:2", &c);
        assert_eq!((rc.manifest_digest, rc.config_digest), (ra.manifest_digest, ra.config_digest));
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }

    #[test]
    fn whiteout_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(EPOCH);
        put(&mut tree, b"/etc/.wh.passwd", 0o644, (0, 0), Kind::File(Content::bytes(*b"")));
        let f = File::create(d.path().join("x")).unwrap();
        let e = write(&tree, &image(), &ImageRef::parse("app").unwrap(), EPOCH, &f).unwrap_err();
        assert!(matches!(&e, OciError::Whiteout { path, target } if path == "/etc/.wh.passwd" && target == "passwd"), "{e}");
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for (k, v) in [("path", 1usize), ("path", 91), ("path", 92), ("path", 993), ("SCHILY.xattr.user.x", 5000)] {
            let mut out = Vec::new();
            pax_record(&mut out, k.as_bytes(), &vec![b'a'; v]);
            let (len, _) = std::str::from_utf8(&out[..8]).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{k} {v}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
