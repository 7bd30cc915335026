//! The flat package repository mmdebstrap installs from: the locked,
//! verified `.deb` files of one root set in a folder, and a `Packages`
//! index written here (no dpkg-scanpackages).
//!
//! Each stanza is the package's own control paragraph, verbatim, as
//! dpkg-scanpackages copies it, with two changes, then `Filename`, `Size`
//! and `SHA256` (apt refuses to download without the last two, even from
//! a trusted repository):
//! - `Priority` is the archive's, from the lock, when the lock has it: the
//!   control file's is not always the archive's (ftp-master overrides:
//!   `apt` says `important`, the archive `required`), and apt orders the
//!   installation by it, so the root's bytes depend on it.
//! - nothing else: field order and the other fields (Description, …) do
//!   not change what apt installs.
//!
//! Stanzas are sorted by file name. apt reads the folder as
//! `deb [trusted=yes] copy:///…/repo ./`: no Release file is needed with
//! `trusted=yes`, and `copy://` (not `file://`) because mmdebstrap's
//! essential stage installs from inside the chroot.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::boot::packages::Locked;
use crate::tree::tar::{decoder, Compressed};

use super::DebianError;

/// The `control` file of a `.deb`, as text.
pub fn control_paragraph(deb: &Path) -> Result<String, DebianError> {
    let bad = |msg: String| DebianError::Deb { deb: deb.to_path_buf(), msg };
    let f = std::fs::File::open(deb).map_err(|e| bad(format!("opening: {e}")))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(f));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a Debian package (ar): {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let Some(ext) = name.strip_prefix("control.tar") else { continue };
        let kind = match ext {
            "" => Compressed::None,
            ".gz" => Compressed::Gzip,
            ".xz" => Compressed::Xz,
            ".zst" => Compressed::Zstd,
            other => return Err(bad(format!("unsupported control.tar compression `{other}`"))),
        };
        let dec = decoder(kind, entry, deb).map_err(|e| bad(e.to_string()))?;
        let mut t = tar::Archive::new(dec);
        for e in t.entries().map_err(|e| bad(format!("control.tar: {e}")))? {
            let mut e = e.map_err(|e| bad(format!("control.tar: {e}")))?;
            let p = e.path_bytes().into_owned();
            if p == b"./control" || p == b"control" {
                let mut s = String::new();
                e.read_to_string(&mut s).map_err(|e| bad(format!("control: {e}")))?;
                return Ok(s);
            }
        }
        return Err(bad("control.tar has no control file".into()));
    }
    Err(bad("no control.tar member: is this a Debian package?".into()))
}

/// One `Packages` stanza: `control` with the archive's `priority` in place
/// of its own, then Filename, Size and SHA256. Ends with a blank line.
pub fn stanza(control: &str, priority: Option<&str>, file_name: &str, size: u64, sha256: &str) -> String {
    let mut out = String::new();
    let mut has_priority = false;
    for line in control.trim_end_matches('\n').lines() {
        if line.trim().is_empty() {
            continue; // a stray blank line would end the stanza
        }
        match (line.split_once(':'), priority) {
            (Some((k, _)), Some(p)) if k.eq_ignore_ascii_case("Priority") && !line.starts_with([' ', '\t']) => {
                has_priority = true;
                let _ = writeln!(out, "Priority: {p}");
            }
            _ => {
                has_priority |= line.split_once(':').is_some_and(|(k, _)| k.eq_ignore_ascii_case("Priority"));
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let (false, Some(p)) = (has_priority, priority) {
        let _ = writeln!(out, "Priority: {p}");
    }
    let _ = write!(out, "Filename: ./{file_name}\nSize: {size}\nSHA256: {sha256}\n\n");
    out
}

/// Put `debs` (locked entry, verified file) into `repo` — hardlinked when
/// the file may be, else copied; never moved — and write `repo/Packages`.
/// `world_readable`: every file must be readable by other users (unshare
/// mode reads them as a subordinate uid).
pub fn write(repo: &Path, debs: &[(&Locked, PathBuf)], world_readable: bool) -> Result<(), DebianError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: String| move |source: std::io::Error| DebianError::Io { what, source };
    std::fs::create_dir_all(repo).map_err(io(format!("creating {}", repo.display())))?;
    std::fs::set_permissions(repo, std::fs::Permissions::from_mode(0o755)).map_err(io(format!("chmod {}", repo.display())))?;
    let mut sorted: Vec<&(&Locked, PathBuf)> = debs.iter().collect();
    sorted.sort_by_key(|(l, _)| l.file_name());
    let mut index = String::new();
    for (locked, path) in sorted {
        let name = locked.file_name();
        let dest = repo.join(&name);
        let readable = path.metadata().is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        if (world_readable && !readable) || std::fs::hard_link(path, &dest).is_err() {
            std::fs::copy(path, &dest).map_err(io(format!("copying {} into {}", path.display(), repo.display())))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).map_err(io(format!("chmod {}", dest.display())))?;
        }
        let size = dest.metadata().map_err(io(format!("reading {}", dest.display())))?.len();
        let control = control_paragraph(&dest)?;
        index.push_str(&stanza(&control, locked.priority.as_deref(), &name, size, &locked.sha256));
    }
    let packages = repo.join("Packages");
    std::fs::write(&packages, index).map_err(io(format!("writing {}", packages.display())))?;
    std::fs::set_permissions(&packages, std::fs::Permissions::from_mode(0o644)).map_err(io(format!("chmod {}", packages.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_take_the_archives_priority() {
        let control =
            "Package: apt\nVersion: 2.6.2\nArchitecture: amd64\nPriority: important\nDepends: adduser,\n libc6\nDescription: x\n more\n";
        let s = stanza(control, Some("required"), "apt_2.6.2_amd64.deb", 1234, "ab");
        assert_eq!(
            s,
            "Package: apt\nVersion: 2.6.2\nArchitecture: amd64\nPriority: required\nDepends: adduser,\n libc6\nDescription: x\n more\nFilename: ./apt_2.6.2_amd64.deb\nSize: 1234\nSHA256: ab\n\n"
        );
        // Without a locked priority, the control file's stays; a missing one is added.
        assert!(stanza(control, None, "a.deb", 1, "c").contains("Priority: important\n"));
        assert!(
            stanza("Package: x\n\n", Some("optional"), "x.deb", 1, "c").starts_with("Package: x\nPriority: optional\nFilename: ./x.deb\n")
        );
    }

    /// A .deb made by the test (dpkg-deb would do; the ar layout is all
    /// that matters), read back, indexed.
    #[test]
    fn control_paragraphs_are_read_from_the_package() {
        let d = tempfile::tempdir().unwrap();
        let mut tb = tar::Builder::new(Vec::new());
        let control = b"Package: hello\nVersion: 1:2.0-1\nArchitecture: all\nPriority: optional\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("./control").unwrap();
        h.set_size(control.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tb.append(&h, &control[..]).unwrap();
        let ctl = {
            use std::io::Write;
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tb.into_inner().unwrap()).unwrap();
            e.finish().unwrap()
        };
        let deb = d.path().join("hello.deb");
        let mut ar = ar::Builder::new(std::fs::File::create(&deb).unwrap());
        for (name, data) in [("debian-binary", b"2.0\n".to_vec()), ("control.tar.xz", ctl)] {
            ar.append(&ar::Header::new(name.as_bytes().to_vec(), data.len() as u64), &data[..]).unwrap();
        }
        drop(ar);
        assert_eq!(control_paragraph(&deb).unwrap().as_bytes(), control);
        let locked = Locked {
            name: "hello".into(),
            version: "1:2.0-1".into(),
            architecture: "all".into(),
            sha256: "00".into(),
            depends: vec![],
            filename: None,
            priority: Some("important".into()),
            essential: false,
        };
        let repo = d.path().join("repo");
        write(&repo, &[(&locked, deb.clone())], true).unwrap();
        let index = std::fs::read_to_string(repo.join("Packages")).unwrap();
        assert!(index.contains("Priority: important\nFilename: ./hello_1%3a2.0-1_all.deb\nSize: "), "{index}");
        assert!(repo.join("hello_1%3a2.0-1_all.deb").is_file());
        assert!(deb.is_file(), "the cached file stays where it was");
    }
}
