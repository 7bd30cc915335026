//! `build-image init DIR`: a starter project, ready for `build-image fetch`,
//! `build-image build recipe.json` and `build-image boot`.
//!
//! The project is a bootable hello appliance: busybox (`busybox-static`)
//! in the initramfs under the guest agent, the Debian cloud kernel
//! (`kernel.package`), a UKI for UEFI on the ESP, and a `smoke.expect`
//! marker that `build-image boot` waits for. `init` writes no package lock:
//! the first `build-image fetch` pins the packages into `packages.lock`
//! next to the recipe (the project's README says so).
//!
//! Nothing half-written: the files are written into a hidden temp folder,
//! synced and checked (the recipe must load) before any of them appears in
//! DIR; a new DIR appears in one rename, an existing empty one gets the
//! files by hard links that never replace anything. On any error nothing is
//! left but what was there before.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{dir} is not empty: `build-image init` only writes into an empty or new folder")]
    NotEmpty { dir: PathBuf },
    #[error("{dir} exists and is not a folder")]
    NotADir { dir: PathBuf },
    #[error("{dir} is a symbolic link: give the folder it points to")]
    Symlink { dir: PathBuf },
    #[error("the folder {parent} (where {dir} would go) does not exist: create it first")]
    NoParent { dir: PathBuf, parent: PathBuf },
    #[error("`{name}` (from {dir}) is not a valid recipe name: use [a-z0-9][a-z0-9._-]*, or pass --name, e.g. --name demo")]
    Name { name: String, dir: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the starter recipe does not load (a bug in build-image)")]
    Recipe(#[source] Box<crate::Error>),
}

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub dir: PathBuf,
    pub name: String,
    /// File names inside `dir`, in the order written.
    pub files: Vec<&'static str>,
}

/// Write the starter project into `dir` (absent or empty), named `name` or
/// after `dir`'s last component.
pub fn init(dir: &Path, name: Option<&str>) -> Result<Initialized, InitError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { what, path, source }
    };
    let exists = match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => return Err(InitError::Symlink { dir: dir.into() }),
        Ok(m) if !m.is_dir() => return Err(InitError::NotADir { dir: dir.into() }),
        Ok(_) => {
            if fs::read_dir(dir).map_err(io("reading", dir))?.next().is_some() {
                return Err(InitError::NotEmpty { dir: dir.into() });
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("reading", dir)(e)),
    };
    // The name: --name, else the folder's own name (`init .` in an empty
    // folder takes that folder's name).
    let name = match name {
        Some(n) => n.to_string(),
        None if exists => dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default(),
        None => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if !valid_name(&name) {
        return Err(InitError::Name { name, dir: dir.into() });
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !exists && !parent.is_dir() {
        return Err(InitError::NoParent { dir: dir.into(), parent });
    }

    // A new folder is made whole beside DIR and renamed onto it (mode 0777
    // minus the umask, as mkdir makes it). An existing empty folder keeps
    // its inode (it may be the shell's working directory): the files are
    // made in a temp folder inside it, then hard-linked into place, which
    // never replaces a file that appeared meanwhile.
    use std::os::unix::fs::PermissionsExt;
    let prefix = format!(".{name}.init.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    let tmp = if exists {
        b.tempdir_in(dir).map_err(io("creating a temp folder in", dir))?
    } else {
        b.permissions(fs::Permissions::from_mode(0o777)).tempdir_in(&parent).map_err(io("creating a temp folder in", &parent))?
    };
    let files = [("recipe.json", recipe(&name)), ("README.md", readme(&name)), (".gitignore", "/out/\n".to_string())];
    for (file, text) in &files {
        let path = tmp.path().join(file);
        let mut f = fs::File::create(&path).map_err(io("creating", &path))?;
        f.write_all(text.as_bytes()).map_err(io("writing", &path))?;
        f.sync_all().map_err(io("syncing", &path))?;
    }
    crate::recipe::load(&tmp.path().join("recipe.json"), None).map_err(|e| InitError::Recipe(Box::new(e.into())))?;
    if exists {
        let mut made = Vec::new();
        for (file, _) in &files {
            let dest = dir.join(file);
            if let Err(e) = fs::hard_link(tmp.path().join(file), &dest) {
                for m in &made {
                    let _ = fs::remove_file(m);
                }
                return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    InitError::NotEmpty { dir: dir.into() }
                } else {
                    io("writing into", dir)(e)
                });
            }
            made.push(dest);
        }
        drop(tmp);
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
    } else {
        fs::File::open(tmp.path()).and_then(|d| d.sync_all()).map_err(io("syncing", tmp.path()))?;
        // rename(2) onto a folder made meanwhile fails unless it is empty;
        // on any failure the temp folder goes away.
        fs::rename(tmp.path(), dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                InitError::NotEmpty { dir: dir.into() }
            } else {
                io("moving the new project into", dir)(e)
            }
        })?;
        let _ = tmp.keep();
        let _ = fs::File::open(&parent).and_then(|d| d.sync_all());
    }
    Ok(Initialized { dir: dir.into(), name, files: files.iter().map(|(f, _)| *f).collect() })
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// The starter recipe: `recipes/hello.json`, UEFI only (no GRUB package
/// needed), named `name`.
pub fn recipe(name: &str) -> String {
    r#"{
  "name": "NAME",
  "source_date_epoch": 1700000000,
  "trees": {
    "initrd": [
      { "deb": "busybox-static" },
      { "symlink": "/bin/sh", "target": "busybox" },
      { "file": "/etc/hostname", "content": "NAME\n" },
      { "file": "/srv/www/index.html", "content": "<h1>Hello from NAME</h1>\n" }
    ]
  },
  "initramfs": { "tree": "initrd", "compression": "gzip" },
  "oem": { "platform": "qemu" },
  "kernel": {
    "package": "linux-image-cloud-amd64",
    "cmdline": "console=ttyS0,115200 quiet",
    "modules": ["virtio_pci", "virtio_net"]
  },
  "init": [
    "/bin/busybox", "sh", "-c",
    "echo 'NAME: READY'; exec busybox httpd -f -p 80 -h /srv/www"
  ],
  "boot": { "firmware": ["uefi"] },
  "smoke": { "expect": "NAME: READY" },
  "disk": {
    "partitions": [
      { "label": "ESP", "type": "esp", "size": "64MiB" }
    ]
  },
  "outputs": ["raw"]
}
"#
    .replace("NAME", name)
}

/// The starter project's README: what it is and the next commands.
pub fn readme(name: &str) -> String {
    r#"# NAME

A bootable appliance made with `build-image`: the Debian cloud kernel, the
build-image guest agent as PID 1 of the initramfs, and busybox, which
prints `NAME: READY` on the serial console and serves `/srv/www` over HTTP
on port 80. Everything is in `recipe.json`.

## Build and boot

```sh
build-image fetch                           # pin the Debian packages into packages.lock (the first time), download them
build-image build recipe.json               # out/NAME.raw and out/NAME.manifest.json
build-image boot out/NAME.raw --accel tcg   # boot it in qemu (UEFI) until `NAME: READY`
```

- `build-image fetch` needs `apt-get` (a Debian or Ubuntu machine). The first
  time it writes `packages.lock` next to the recipe: the exact versions and
  sha256 of the Debian packages build-image uses by default
  (`linux-image-cloud-amd64`, `busybox-static`, `systemd-boot-efi` for the
  UEFI stub, `grub-pc-bin` for BIOS boot) and what they depend on. Commit
  it: the same lock gives the same image, byte for byte. `build-image fetch
  --update-lock` moves it to Debian's current versions.
- Downloads go to a per-user cache (`$XDG_CACHE_HOME/build-image`, or
  `--cache` / `$BUILD_IMAGE_CACHE`), shared by all your projects.
- `build-image boot` needs `qemu-system-x86_64` and OVMF (Debian packages
  `qemu-system-x86` and `ovmf`); `--accel tcg` works without KVM. To reach
  the web page: add `--hostfwd tcp:127.0.0.1:8080-:80 --timeout 600`, then
  `curl http://127.0.0.1:8080/` while it runs.
- Outputs go to `out/` (`--out` to change it); `out/NAME.manifest.json`
  records the sha256 of every output and input.

## Next steps

- Add files with more layers in `trees.initrd` (`{ "dir": "files" }`,
  `{ "file": "/etc/motd", "content": "…" }`, `{ "deb": "NAME" }` after
  `build-image fetch --add NAME`).
- Give the appliance a disk-backed root, other outputs (`qcow2`, `vmdk`,
  `vhd`), or BIOS boot too: `"boot": { "firmware": ["uefi", "bios"] }` and
  a partition `{ "label": "BIOS", "type": "bios-boot", "size": "1MiB" }`.
- `build-image schema` prints the JSON Schema of `recipe.json` for your
  editor; `build-image --help` lists every command.
"#
    .replace("NAME", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_project_that_loads_into_a_new_or_empty_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("demo");
        let r = init(&dir, None).unwrap();
        assert_eq!(r.name, "demo");
        let loaded = crate::recipe::load(&dir.join("recipe.json"), None).unwrap();
        assert_eq!(loaded.recipe.name, "demo");
        assert_eq!(loaded.recipe.smoke.as_ref().unwrap().expect, "demo: READY");
        let readme = fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("build-image boot out/demo.raw --accel tcg"), "{readme}");
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [".gitignore", "README.md", "recipe.json"]);
        // Nothing else beside it (the temp folder is gone).
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);

        // An existing empty folder, with --name.
        let empty = t.path().join("Empty Dir");
        fs::create_dir(&empty).unwrap();
        init(&empty, Some("web-1")).unwrap();
        assert!(fs::read_to_string(empty.join("recipe.json")).unwrap().contains(r#""name": "web-1""#));
        let n: Vec<_> = fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(n.len(), 3, "no temp folder left inside: {n:?}");
        // `init .` in an empty folder: named after it, same inode.
        let here = t.path().join("here");
        fs::create_dir(&here).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(&here).unwrap().ino();
        let r = init(&here.join("."), None).unwrap();
        assert_eq!(r.name, "here");
        assert_eq!(fs::metadata(&here).unwrap().ino(), ino);
        assert!(here.join("recipe.json").is_file());
    }

    #[test]
    fn refuses_and_leaves_nothing_behind() {
        let t = tempfile::tempdir().unwrap();
        let full = t.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("keep"), "mine").unwrap();
        let e = init(&full, None).unwrap_err();
        assert!(matches!(e, InitError::NotEmpty { .. }), "{e}");
        assert_eq!(fs::read_to_string(full.join("keep")).unwrap(), "mine");
        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(init(&file, None), Err(InitError::NotADir { .. })));
        let e = init(&t.path().join("Bad Name"), None).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        assert!(matches!(init(&t.path().join("no/such/parent"), None), Err(InitError::NoParent { .. })));
        std::os::unix::fs::symlink("full", t.path().join("link")).unwrap();
        assert!(matches!(init(&t.path().join("link"), None), Err(InitError::Symlink { .. })));
        // Only what the test made: no temp folders left.
        let mut names: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["file", "full", "link"]);
    }
}
