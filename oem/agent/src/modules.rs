//! The module list `/etc/agent/modules`: pure parsing and path resolution.
//!
//! The builder writes one module per line, already in dependency order (it
//! computes the order from each `.ko`'s `.modinfo` `depends=`), so the agent
//! loads them top to bottom with `finit_module` and needs no `modules.dep`.
//!
//! Line format: `PATH [PARAMS…]`. PATH is absolute or relative to
//! `/lib/modules/<uname -r>/`; anything after the first run of whitespace
//! is passed to the module as its parameters (`key=value key2=value2`).
//! Blank lines and lines starting with `#` are ignored.

use std::path::{Path, PathBuf};

/// One line of the module list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLine {
    pub path: String,
    pub params: String,
    /// 1-based line number, for error messages.
    pub line: usize,
}

/// Parse the whole list.
pub fn parse_list(s: &str) -> Vec<ModuleLine> {
    s.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (path, params) = match l.find(char::is_whitespace) {
                Some(p) => (&l[..p], l[p..].trim()),
                None => (l, ""),
            };
            Some(ModuleLine { path: path.to_string(), params: params.to_string(), line: i + 1 })
        })
        .collect()
}

/// Where the module file is: absolute paths stay, relative ones are taken
/// from `/lib/modules/<release>/` under `root`.
pub fn resolve(root: &Path, release: &str, path: &str) -> PathBuf {
    match path.strip_prefix('/') {
        Some(abs) => root.join(abs),
        None => root.join("lib/modules").join(release).join(path),
    }
}

/// The module's name as the kernel reports it: the file name without `.ko`
/// (or `.ko.xz`/`.ko.zst`/`.ko.gz`), with `-` turned into `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"].iter().find_map(|s| base.strip_suffix(s)).unwrap_or(base);
    stem.replace('-', "_")
}

/// Compressed modules need the kernel's in-kernel decompression
/// (`MODULE_INIT_COMPRESSED_FILE`), which the Debian cloud kernel lacks; the
/// agent refuses them with a clear message instead of an `ENOEXEC`.
pub fn is_compressed(path: &str) -> bool {
    [".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| path.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let l = parse_list(
            "# virtio\nkernel/drivers/virtio/virtio_ring.ko\n\n  kernel/drivers/virtio/virtio.ko  \n/opt/m/foo-bar.ko debug=1  x=2\n",
        );
        assert_eq!(l.len(), 3);
        assert_eq!(l[0], ModuleLine { path: "kernel/drivers/virtio/virtio_ring.ko".into(), params: "".into(), line: 2 });
        assert_eq!(l[1].path, "kernel/drivers/virtio/virtio.ko");
        assert_eq!(l[1].line, 4);
        assert_eq!(l[2].path, "/opt/m/foo-bar.ko");
        assert_eq!(l[2].params, "debug=1  x=2");
        assert!(parse_list("").is_empty());
        assert!(parse_list("\n# only\n").is_empty());
    }

    #[test]
    fn resolves_paths() {
        let r = Path::new("/");
        assert_eq!(
            resolve(r, "6.1.0-56-cloud-amd64", "kernel/drivers/block/virtio_blk.ko"),
            PathBuf::from("/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/block/virtio_blk.ko")
        );
        assert_eq!(resolve(r, "x", "/opt/a.ko"), PathBuf::from("/opt/a.ko"));
        assert_eq!(resolve(Path::new("/sysroot"), "x", "/opt/a.ko"), PathBuf::from("/sysroot/opt/a.ko"));
    }

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/drivers/virtio/virtio_pci_modern_dev.ko"), "virtio_pci_modern_dev");
        assert_eq!(module_name("kernel/net/core/failover.ko.xz"), "failover");
        assert_eq!(module_name("crc32c-intel.ko"), "crc32c_intel");
        assert!(is_compressed("a.ko.zst"));
        assert!(!is_compressed("a.ko"));
    }
}
