//! `oci` layers: a container image as a tree.
//!
//! Two archive shapes are read (the archive itself may be gzip/zstd/xz
//! compressed; it is then spooled once):
//! - an OCI image layout (`oci-layout`, `index.json` → manifest → config and
//!   layers under `blobs/ALG/HEX`), as `skopeo copy … oci-archive:` and
//!   `docker buildx --output type=oci` write. An index with several
//!   manifests is narrowed to linux/amd64. sha256 digests are verified.
//! - a `docker save` archive (`manifest.json` → `Config`, `Layers`).
//!
//! Each layer blob is read in place when uncompressed, else decompressed
//! into a spool file, and unpacked with the `tar` layer's code
//! ([`super::tar::unpack`]) with whiteouts applied: `.wh.NAME` deletes NAME
//! and `.wh..wh..opq` empties its directory, of what lower layers put there.
//! Escapes are refused as for any tar.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::content::SourceFile;
use super::tar::{decoder, sniff, spool, unpack, Archive, Compressed, Whiteouts};
use super::{components, LayerError, Tree};

/// What the image's config says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageConfig {
    /// The command as `docker run` forms it: Entrypoint then Cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

struct Image {
    archive: Archive,
    /// Regular files: normalised name → (offset in the archive, size).
    files: BTreeMap<String, (u64, u64)>,
    /// Symlinks: normalised name → normalised target (docker save links
    /// repeated layers).
    links: BTreeMap<String, String>,
}

fn norm(name: &[u8]) -> Option<String> {
    let c = components(name).ok()?;
    Some(c.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join("/"))
}

impl Image {
    fn err(&self, msg: impl Into<String>) -> LayerError {
        LayerError::Archive { archive: self.archive.source.path.clone(), msg: msg.into() }
    }

    fn open(archive: Archive) -> Result<Image, LayerError> {
        let err = |msg: String| LayerError::Archive { archive: archive.source.path.clone(), msg };
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        {
            let mut reader = archive.reader();
            let mut t = tar::Archive::new(&mut reader);
            let entries = t.entries_with_seek().map_err(|e| err(format!("not a tar archive: {e}")))?;
            for entry in entries {
                let entry = entry.map_err(|e| err(format!("reading entries: {e}")))?;
                let Some(name) = norm(&entry.path_bytes()) else { continue };
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        files.insert(name, (entry.raw_file_position(), entry.size()));
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Some(t) = entry.link_name_bytes() {
                            let joined = if entry.header().entry_type() == tar::EntryType::Link {
                                t.to_vec()
                            } else {
                                let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                                format!("{dir}/{}", String::from_utf8_lossy(&t)).into_bytes()
                            };
                            if let Some(target) = norm(&joined) {
                                links.insert(name, target);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Image { archive, files, links })
    }

    /// The (offset, size) of a member, following up to 8 links.
    fn member(&self, name: &str) -> Result<(u64, u64), LayerError> {
        let mut n = norm(name.as_bytes()).ok_or_else(|| self.err(format!("`{name}` escapes the archive")))?;
        for _ in 0..8 {
            if let Some(&m) = self.files.get(&n) {
                return Ok(m);
            }
            match self.links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(self.err(format!("the image names `{name}`, but the archive has no such file")))
    }

    fn slice(&self, (offset, len): (u64, u64)) -> Archive {
        Archive { source: self.archive.source.clone(), start: self.archive.start + offset, len }
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, LayerError> {
        let m = self.member(name)?;
        if m.1 > MAX_JSON {
            return Err(self.err(format!("`{name}` is {} bytes: too large for a JSON document", m.1)));
        }
        let mut buf = Vec::with_capacity(m.1 as usize);
        self.slice(m).reader().read_to_end(&mut buf).map_err(|e| LayerError::host(&self.archive.source.path, "reading", e))?;
        Ok(buf)
    }

    fn json(&self, name: &str) -> Result<Value, LayerError> {
        let b = self.read_small(name)?;
        serde_json::from_slice(&b).map_err(|e| self.err(format!("`{name}` is not valid JSON: {e}")))
    }

    /// `blobs/ALG/HEX` for a digest, checked against its sha256 when the
    /// algorithm is sha256.
    fn blob(&self, digest: &str) -> Result<(u64, u64), LayerError> {
        let (alg, hex) = digest.split_once(':').ok_or_else(|| self.err(format!("`{digest}` is not a digest (ALG:HEX)")))?;
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) || alg.contains('/') || alg.contains("..") {
            return Err(self.err(format!("`{digest}` is not a digest (ALG:HEX)")));
        }
        let m = self.member(&format!("blobs/{alg}/{hex}"))?;
        if alg == "sha256" {
            let mut h = Sha256::new();
            std::io::copy(&mut self.slice(m).reader(), &mut h).map_err(|e| LayerError::host(&self.archive.source.path, "hashing", e))?;
            let got = hex::encode(h.finalize());
            if !got.eq_ignore_ascii_case(hex) {
                return Err(self.err(format!("blob {digest} has sha256 {got}: the archive is corrupt")));
            }
        }
        Ok(m)
    }
}

fn strings(v: &Value, what: &str, img: &Image) -> Result<Vec<String>, LayerError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| img.err(format!("config `{what}`: expected strings")))).collect()
        }
        _ => Err(img.err(format!("config `{what}`: expected an array of strings"))),
    }
}

fn parse_config(v: &Value, img: &Image) -> Result<ImageConfig, LayerError> {
    let c = &v["config"];
    let opt = |k: &str| c[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    Ok(ImageConfig {
        entrypoint: strings(&c["Entrypoint"], "Entrypoint", img)?,
        cmd: strings(&c["Cmd"], "Cmd", img)?,
        env: strings(&c["Env"], "Env", img)?,
        working_dir: opt("WorkingDir"),
        user: opt("User"),
    })
}

const INDEX_TYPES: [&str; 2] = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// The manifest an OCI index leads to (narrowed to linux/amd64 when it
/// lists several), following nested indexes.
fn oci_manifest(img: &Image) -> Result<Value, LayerError> {
    let mut doc = img.json("index.json")?;
    for _ in 0..4 {
        let is_index = doc.get("manifests").is_some() || doc["mediaType"].as_str().is_some_and(|m| INDEX_TYPES.contains(&m));
        if !is_index {
            return Ok(doc);
        }
        let list = doc["manifests"].as_array().cloned().unwrap_or_default();
        let chosen: Vec<&Value> = if list.len() == 1 {
            list.iter().collect()
        } else {
            list.iter().filter(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64").collect()
        };
        let m = match chosen.as_slice() {
            [m] => *m,
            [] => return Err(img.err(format!("the index lists {} manifests and none for linux/amd64", list.len()))),
            many => return Err(img.err(format!("the index lists {} linux/amd64 manifests: export exactly one image", many.len()))),
        };
        let digest = m["digest"].as_str().ok_or_else(|| img.err("an index entry has no `digest`"))?;
        let b = img.blob(digest)?;
        let mut buf = Vec::new();
        img.slice(b).reader().read_to_end(&mut buf).map_err(|e| LayerError::host(&img.archive.source.path, "reading", e))?;
        doc = serde_json::from_slice(&buf).map_err(|e| img.err(format!("manifest {digest} is not valid JSON: {e}")))?;
    }
    Err(img.err("indexes nest too deeply"))
}

/// A layer: its name (digest or path) and (offset, size) in the archive.
type LayerRef = (String, (u64, u64));

/// The config and layer members of the image, in order.
fn resolve(img: &Image) -> Result<(ImageConfig, Vec<LayerRef>), LayerError> {
    if img.files.contains_key("index.json") {
        let m = oci_manifest(img)?;
        let cdigest = m["config"]["digest"].as_str().ok_or_else(|| img.err("the manifest has no `config.digest`"))?;
        let cb = img.blob(cdigest)?;
        let mut buf = Vec::new();
        img.slice(cb).reader().read_to_end(&mut buf).map_err(|e| LayerError::host(&img.archive.source.path, "reading", e))?;
        let cv: Value = serde_json::from_slice(&buf).map_err(|e| img.err(format!("config {cdigest} is not valid JSON: {e}")))?;
        let config = parse_config(&cv, img)?;
        let mut layers = Vec::new();
        for (i, l) in m["layers"].as_array().cloned().unwrap_or_default().iter().enumerate() {
            let d = l["digest"].as_str().ok_or_else(|| img.err(format!("manifest layer {i} has no `digest`")))?;
            layers.push((d.to_string(), img.blob(d)?));
        }
        Ok((config, layers))
    } else if img.files.contains_key("manifest.json") {
        let m = img.json("manifest.json")?;
        let list = m.as_array().ok_or_else(|| img.err("manifest.json is not an array"))?;
        let [one] = list.as_slice() else {
            return Err(img.err(format!("manifest.json lists {} images: `docker save` exactly one", list.len())));
        };
        let cpath = one["Config"].as_str().ok_or_else(|| img.err("manifest.json has no `Config`"))?;
        let config = parse_config(&img.json(cpath)?, img)?;
        let mut layers = Vec::new();
        for l in one["Layers"].as_array().cloned().unwrap_or_default() {
            let p = l.as_str().ok_or_else(|| img.err("manifest.json `Layers` holds a non-string"))?.to_string();
            let m = img.member(&p)?;
            layers.push((p, m));
        }
        Ok((config, layers))
    } else {
        Err(img.err("neither index.json (OCI image layout) nor manifest.json (docker save): not a container image archive"))
    }
}

/// Apply an `oci` layer from the host archive `path` at `to`. Returns the
/// image's run configuration.
pub fn apply_oci(tree: &mut Tree, path: &Path, to: &str, spool_dir: &Path) -> Result<ImageConfig, LayerError> {
    let mut f = File::open(path).map_err(|e| LayerError::host(path, "opening the image archive", e))?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).map_err(|e| LayerError::host(path, "reading", e))?;
    let kind = sniff(&head[..n]);
    let file = if kind == Compressed::None {
        f
    } else {
        let f = File::open(path).map_err(|e| LayerError::host(path, "opening the image archive", e))?;
        spool(decoder(kind, BufReader::with_capacity(1 << 20, f), path)?, spool_dir, path)?
    };
    let len = file.metadata().map_err(|e| LayerError::host(path, "reading", e))?.len();
    let img = Image::open(Archive { source: Arc::new(SourceFile { path: path.to_path_buf(), file }), start: 0, len })?;
    let (config, layers) = resolve(&img)?;
    for (name, m) in layers {
        let blob = img.slice(m);
        let mut head = [0u8; 6];
        let k = blob.reader().read(&mut head).map_err(|e| LayerError::host(path, "reading", e))?;
        let layer = match sniff(&head[..k]) {
            Compressed::None => blob,
            c => {
                let shown = path.join(&name);
                let file = spool(decoder(c, BufReader::with_capacity(1 << 20, blob.reader()), &shown)?, spool_dir, &shown)?;
                let len = file.metadata().map_err(|e| LayerError::host(spool_dir, "reading a spool file in", e))?.len();
                Archive { source: Arc::new(SourceFile { path: shown, file }), start: 0, len }
            }
        };
        unpack(tree, &layer, to, spool_dir, Whiteouts::Apply).map_err(|e| match e {
            LayerError::Archive { archive, msg } => LayerError::Archive { archive, msg: format!("layer {name}: {msg}") },
            e => e,
        })?;
    }
    Ok(config)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tree::Kind;
    use std::io::Write;

    fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], dir: bool) {
        let mut h = tar::Header::new_ustar();
        // set_path refuses `..`; the escape test needs it raw.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in files {
            entry(&mut b, p, d, p.ends_with('/'));
        }
        b.into_inner().unwrap()
    }

    /// Two layers: the first has /etc/a, /etc/b, /opt/app/{x,y}; the second
    /// deletes /etc/b by whiteout, makes /opt/app opaque (keeping its own
    /// /opt/app/z) and adds /bin/hello.
    pub fn sample_layers() -> (Vec<u8>, Vec<u8>) {
        let l1 = layer(&[("etc/", b""), ("etc/a", b"A"), ("etc/b", b"B"), ("opt/app/", b""), ("opt/app/x", b"X"), ("opt/app/y", b"Y")]);
        let l2 = layer(&[("etc/.wh.b", b""), ("opt/app/z", b"Z"), ("opt/app/.wh..wh..opq", b""), ("bin/hello", b"#!/bin/sh\necho hi\n")]);
        (l1, l2)
    }

    pub fn sample_config() -> Value {
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/bin/hello"], "Cmd": ["--greet", "world"],
                "Env": ["PATH=/usr/bin:/bin", "GREETING=hi there"],
                "WorkingDir": "/opt/app", "User": "1000:1000"
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        })
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// An OCI image-layout archive: layer 1 gzip, layer 2 zstd.
    pub fn oci_archive() -> Vec<u8> {
        let (l1, l2) = sample_layers();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&l1).unwrap();
        let l1 = gz.finish().unwrap();
        let l2 = zstd::encode_all(&l2[..], 3).unwrap();
        let config = serde_json::to_vec(&sample_config()).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", sha(&l1)), "size": l1.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": format!("sha256:{}", sha(&l2)), "size": l2.len()}
            ]
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
                           "platform": {"os": "linux", "architecture": "amd64"}}]
        }))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, false);
        entry(&mut b, "index.json", &index, false);
        for blob in [&config, &manifest, &l1, &l2] {
            entry(&mut b, &format!("blobs/sha256/{}", sha(blob)), blob, false);
        }
        b.into_inner().unwrap()
    }

    /// A `docker save` archive with uncompressed layers.
    fn docker_archive() -> Vec<u8> {
        let (l1, l2) = sample_layers();
        let config = serde_json::to_vec(&sample_config()).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": "cfg.json", "RepoTags": ["x:latest"], "Layers": ["one/layer.tar", "two/layer.tar"]}
        ]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "manifest.json", &manifest, false);
        entry(&mut b, "cfg.json", &config, false);
        entry(&mut b, "one/layer.tar", &l1, false);
        entry(&mut b, "two/layer.tar", &l2, false);
        b.into_inner().unwrap()
    }

    fn read(t: &Tree, p: &str) -> Option<Vec<u8>> {
        let id = t.find(p.as_bytes())?;
        let Kind::File(c) = &t.inode(id).kind else { return None };
        let mut buf = vec![0u8; c.len() as usize];
        c.open().unwrap().read_exact_at(&mut buf, 0).unwrap();
        Some(buf)
    }

    fn check(t: &Tree, cfg: &ImageConfig) {
        assert_eq!(read(t, "/etc/a").as_deref(), Some(&b"A"[..]));
        assert!(t.find(b"/etc/b").is_none(), "whiteout deleted /etc/b");
        assert!(t.find(b"/etc/.wh.b").is_none(), "whiteouts are not files");
        assert!(t.find(b"/opt/app/x").is_none() && t.find(b"/opt/app/y").is_none(), "opaque dir hides lower entries");
        assert_eq!(read(t, "/opt/app/z").as_deref(), Some(&b"Z"[..]), "the opaque layer's own entry stays");
        assert!(t.find(b"/opt/app/.wh..wh..opq").is_none());
        assert!(read(t, "/bin/hello").unwrap().starts_with(b"#!/bin/sh"));
        assert_eq!(cfg.argv(), ["/bin/hello", "--greet", "world"]);
        assert_eq!(cfg.env, ["PATH=/usr/bin:/bin", "GREETING=hi there"]);
        assert_eq!(cfg.working_dir.as_deref(), Some("/opt/app"));
        assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn oci_layout_with_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img.tar");
        std::fs::write(&p, oci_archive()).unwrap();
        let mut t = Tree::new(0);
        let cfg = apply_oci(&mut t, &p, "/", d.path()).unwrap();
        check(&t, &cfg);
    }

    #[test]
    fn docker_save_gzipped_archive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&docker_archive()).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let mut t = Tree::new(0);
        let cfg = apply_oci(&mut t, &p, "/", d.path()).unwrap();
        check(&t, &cfg);
    }

    #[test]
    fn corrupt_blob_and_escaping_whiteout_are_refused() {
        let d = tempfile::tempdir().unwrap();
        // Flip one byte of the zstd layer's content: its digest no longer matches.
        let mut a = oci_archive();
        let pos = a.windows(4).rposition(|w| w == [0x28, 0xb5, 0x2f, 0xfd]).unwrap();
        a[pos + 10] ^= 0xff;
        let p = d.path().join("bad.tar");
        std::fs::write(&p, &a).unwrap();
        let e = apply_oci(&mut Tree::new(0), &p, "/", d.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");

        let evil = layer(&[("../.wh.etc", b"")]);
        let manifest = serde_json::to_vec(&serde_json::json!([{"Config": "c.json", "Layers": ["l.tar"]}])).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "manifest.json", &manifest, false);
        entry(&mut b, "c.json", br#"{"config":{}}"#, false);
        entry(&mut b, "l.tar", &evil, false);
        let p = d.path().join("evil.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        let e = apply_oci(&mut Tree::new(0), &p, "/", d.path()).unwrap_err().to_string();
        assert!(e.contains("escapes"), "{e}");
    }
}
