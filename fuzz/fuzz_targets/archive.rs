//! Archives into a Tree, as a recipe's layers read them: `tar`
//! (`tree::tar::apply_tar`, plain or compressed), `deb`
//! (`tree::tar::apply_deb`: the ar archive's data.tar), and `oci`
//! (`tree::oci::apply_oci`: an OCI image layout or a `docker save`
//! archive, digests checked, whiteouts applied). Any error is fine; a
//! panic is not, and every file of the resulting tree must read back
//! within its source.
//!
//! Input: first byte picks the reader (low 2 bits) and raw (bit 2 clear:
//! the rest is the archive file) or structured (bit 2 set: entries
//! generated, written byte by byte, `..` and all).
#![no_main]

use std::fs;

use arbitrary::{Arbitrary, Unstructured};
use build_image::tree::{self, Kind, Tree};
use build_image_fuzz::archive::{self, Entry};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    /// A second layer for images.
    lower: Vec<Entry>,
    gzip: bool,
    /// docker save instead of an OCI layout.
    docker: bool,
    /// Break the n-th digest.
    bad_digest: Option<u8>,
    config: Option<String>,
    to: u8,
}

const TO: [&str; 4] = ["/", "/opt/x", "/../..", ""];

fn oci(i: &Input) -> Vec<u8> {
    let layers: Vec<Vec<u8>> = [&i.lower, &i.entries]
        .iter()
        .map(|e| {
            let t = archive::tar(&e[..e.len().min(16)]);
            if i.gzip {
                archive::gzip(&t)
            } else {
                t
            }
        })
        .collect();
    let config = i.config.clone().unwrap_or_else(|| r#"{"config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"Env":["A=1"]}}"#.into());
    let mut digests: Vec<String> = layers.iter().map(|l| archive::sha256_hex(l)).collect();
    let cdigest = archive::sha256_hex(config.as_bytes());
    if let Some(k) = i.bad_digest {
        if let Some(d) = digests.get_mut(k as usize % 2) {
            d.replace_range(0..1, "0");
        }
    }
    let mut files = Vec::new();
    if i.docker {
        let names: Vec<String> = (0..layers.len()).map(|k| format!("l{k}/layer.tar")).collect();
        let manifest = serde_json::json!([{ "Config": "config.json", "Layers": names }]).to_string();
        files.push(archive::file("manifest.json", manifest.into_bytes()));
        files.push(archive::file("config.json", config.into_bytes()));
        for (n, l) in names.iter().zip(layers) {
            files.push(archive::file(n, l));
        }
    } else {
        let media = if i.gzip { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cdigest}"), "size": config.len() },
            "layers": digests.iter().zip(&layers).map(|(d, l)| serde_json::json!({"mediaType": media, "digest": format!("sha256:{d}"), "size": l.len()})).collect::<Vec<_>>(),
        })
        .to_string();
        let mdigest = archive::sha256_hex(manifest.as_bytes());
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mdigest}"), "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" } }] })
        .to_string();
        files.push(archive::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
        files.push(archive::file("index.json", index.into_bytes()));
        files.push(archive::file(&format!("blobs/sha256/{mdigest}"), manifest.into_bytes()));
        files.push(archive::file(&format!("blobs/sha256/{cdigest}"), config.into_bytes()));
        // Under the names the manifest gives (a broken digest too: its
        // blob is there, its bytes do not match).
        for (d, l) in digests.iter().zip(layers) {
            files.push(archive::file(&format!("blobs/sha256/{d}"), l));
        }
    }
    archive::tar(&files)
}

fn check(t: &Tree) {
    t.walk(|v| {
        if let Kind::File(c) = &t.inode(v.ino).kind {
            let len = c.len();
            if let Ok(r) = c.open() {
                let mut b = vec![0u8; len.min(4096) as usize];
                let at = len - b.len() as u64;
                if let Err(e) = r.read_exact_at(&mut b, at) {
                    panic!("{}: {len} bytes that do not read back: {e}", tree::show(v.path));
                }
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let (bytes, to) = if mode & 4 == 0 {
        (rest.to_vec(), "/")
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(i) = Input::arbitrary(&mut u) else { return };
        let to = TO[i.to as usize % TO.len()];
        let entries = &i.entries[..i.entries.len().min(32)];
        let b = match mode & 3 {
            0 => {
                let t = archive::tar(entries);
                if i.gzip {
                    archive::gzip(&t)
                } else {
                    t
                }
            }
            1 => {
                let t = archive::tar(entries);
                let (name, data) = if i.gzip { ("data.tar.gz", archive::gzip(&t)) } else { ("data.tar", t) };
                archive::ar(&[(b"debian-binary".to_vec(), b"2.0\n".to_vec()), (name.as_bytes().to_vec(), data)])
            }
            _ => oci(&i),
        };
        (b, to)
    };
    let dir = tempfile::Builder::new().prefix("fuzz-archive").tempdir().expect("scratch");
    let path = dir.path().join("input");
    fs::write(&path, &bytes).expect("writing the archive");
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).expect("spool");
    let mut t = Tree::new(1_700_000_000);
    let ok = match mode & 3 {
        0 => tree::tar::apply_tar(&mut t, &path, to, &spool).is_ok(),
        1 => tree::tar::apply_deb(&mut t, &path, to, &spool).is_ok(),
        _ => tree::oci::apply_oci(&mut t, &path, to, &spool).is_ok(),
    };
    if ok {
        check(&t);
        let _ = t.link_counts();
        let _ = t.content_bytes();
    }
});
