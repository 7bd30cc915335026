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

/// `depends=` of a module from its ELF image (64-bit little-endian, as
/// x86-64 modules are): the names, `-` turned into `_`. `None` when `elf`
/// is no such ELF or has no `.modinfo` section.
pub fn modinfo_depends(elf: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize);
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize);
    let u64_at = |o: usize| usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok();
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let section = |i: usize| -> Option<(usize, &[u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        Some((u32_at(h)?, elf.get(off..off.checked_add(size)?)?))
    };
    let names = section(shstrndx)?.1;
    let info = (0..shnum).find_map(|i| {
        let (name, data) = section(i)?;
        names.get(name..)?.starts_with(b".modinfo\0").then_some(data)
    })?;
    let deps = info.split(|b| *b == 0).find_map(|f| f.strip_prefix(b"depends="))?;
    let deps = String::from_utf8_lossy(deps);
    Some(deps.split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relocatable x86-64 ELF whose only section besides the names is
    /// `.modinfo` with `info`.
    fn fake_ko(info: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let sh_off = (64 + info.len() + names.len()).next_multiple_of(8);
        let mut f = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&62u16.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(&(sh_off as u64).to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        for v in [64u16, 0, 0, 64, 3, 1] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(info);
        f.extend_from_slice(names);
        f.resize(sh_off, 0);
        for (name, kind, off, size) in [(0u32, 0u32, 0usize, 0usize), (1, 3, 64 + info.len(), names.len()), (11, 1, 64, info.len())] {
            f.extend_from_slice(&name.to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&[0; 16]);
            f.extend_from_slice(&(off as u64).to_le_bytes());
            f.extend_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&[0; 24]);
        }
        f
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let ko = fake_ko(b"license=GPL\0depends=scsi_mod,hv_vmbus,scsi-transport-fc\0name=hv_storvsc\0");
        assert_eq!(modinfo_depends(&ko), Some(vec!["scsi_mod".into(), "hv_vmbus".into(), "scsi_transport_fc".into()]));
        assert_eq!(modinfo_depends(&fake_ko(b"depends=\0name=virtio_ring\0")), Some(vec![]));
        assert_eq!(modinfo_depends(&fake_ko(b"name=x\0")), None, "no depends= field");
        assert_eq!(modinfo_depends(b"#!/bin/sh\n"), None);
        let mut cut = ko.clone();
        cut.truncate(100);
        assert_eq!(modinfo_depends(&cut), None, "a truncated file is no module");
    }

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
