//! Which modules the initramfs gets beyond the recipe's `kernel.modules`:
//! what the boot path needs, so that a recipe listing only `virtio_blk`
//! still finds its root and reads its config drive.
//!
//! | for | modules | when |
//! |---|---|---|
//! | the root's filesystem | ext4 → `ext4`, btrfs → `btrfs`, vfat → `vfat` `nls_cp437` `nls_utf8` | each partition of type `root-x86-64` |
//! | a growing partition's filesystem | the same | `"grow": true` (the agent mounts it to resize it) |
//! | the OEM partition's filesystem | the same | the partition labelled `OEM` |
//! | a config drive | [`CONFIG_DRIVE`]: `vfat` `nls_cp437` `nls_utf8` `isofs` | the OEM configuration's `metadata.sources` has `config-drive` (platform `vpc`), or the image has no OEM configuration (the agent then tries every source) |
//! | `"drivers": "generic"` | [`GENERIC`] | asked for |
//! | the virtio PCI transport | `virtio_pci` | a named or added virtio driver (`virtio_*`, or a module that depends on `virtio`), unless the recipe names a transport |
//!
//! vfat needs the two NLS tables because the kernel mounts it with its
//! default code page (437) and I/O charset (utf8): without them the mount
//! fails with EINVAL. A virtio driver binds to devices that a transport
//! finds, and nothing in its `.modinfo` names the transport.
//!
//! Each added name is then resolved like the recipe's own (dependencies
//! first, from each `.ko`'s `.modinfo`). A name the kernel has built in
//! needs nothing; a name the package lacks is skipped, and both are
//! reported, except the root's filesystem: without it the image cannot
//! mount its root, which is an error.

use serde::Serialize;
use serde_json::Value;

use super::kernel::{normalise, Kernel, KernelError};
use crate::recipe::{Drivers, Filesystem, Recipe};

/// What reads an OpenStack config drive: vfat (with the NLS tables its
/// default mount options need) or ISO 9660.
pub const CONFIG_DRIVE: &[&str] = &["vfat", "nls_cp437", "nls_utf8", "isofs"];

/// `"drivers": "generic"`: the disks, CD-ROMs and NICs that common
/// hypervisors give a guest.
pub const GENERIC: &[&str] = &[
    // QEMU/KVM and the clouds built on it: virtio, NVMe, SATA (q35), IDE
    // (pc), SCSI disks and CD-ROMs (Nova's ISO config drive).
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "sr_mod",
    // Hyper-V and Azure (hv_vmbus comes as their dependency).
    "hv_storvsc",
    "hv_netvsc",
    // VMware: PVSCSI, LSI Logic (the `vmdk` output's default adapter),
    // VMXNET3, E1000/E1000E.
    "vmw_pvscsi",
    "mptspi",
    "vmxnet3",
    "e1000",
    "e1000e",
    // Xen (and older AWS instances).
    "xen_blkfront",
    "xen_netfront",
];

/// Virtio transports: they find the devices the drivers bind to.
const VIRTIO_TRANSPORTS: &[&str] = &["virtio_pci", "virtio_mmio", "virtio_vdpa"];

/// `virtio_*` modules that are no device driver: the bus core and the
/// pieces of the transports.
const VIRTIO_NOT_DRIVERS: &[&str] = &["virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_dma_buf"];

/// The modules a filesystem needs to be mounted, the filesystem's own first.
pub fn fs_modules(fs: Filesystem) -> &'static [&'static str] {
    match fs {
        Filesystem::Ext4 => &["ext4"],
        Filesystem::Btrfs => &["btrfs"],
        Filesystem::Vfat => &["vfat", "nls_cp437", "nls_utf8"],
        Filesystem::None => &[],
    }
}

/// Whether a module (normalised name, its direct dependencies) is a virtio
/// device driver, which needs a transport to see any device.
pub fn is_virtio_driver(name: &str, deps: &[String]) -> bool {
    if VIRTIO_TRANSPORTS.contains(&name) || VIRTIO_NOT_DRIVERS.contains(&name) {
        return false;
    }
    name.starts_with("virtio_") || deps.iter().any(|d| d == "virtio")
}

/// A filesystem the agent mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsNeed {
    pub fs: Filesystem,
    /// What it is for: `root filesystem`.
    pub role: &'static str,
    /// The JSON path of its partition: `disk.partitions[2]`.
    pub at: String,
    /// Whether the boot cannot go on without it (the root).
    pub required: bool,
}

/// What the boot path needs from the kernel, from the recipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub filesystems: Vec<FsNeed>,
    /// Why the agent may read a config drive, when it may.
    pub config_drive: Option<String>,
    /// `"drivers": "generic"`.
    pub generic: bool,
}

impl Needs {
    /// The needs of `recipe`, whose OEM configuration (layers 00–20) is
    /// `oem` (`None`: the image has none).
    pub fn of(recipe: &Recipe, oem: Option<&crate::oem::Rendered>) -> Needs {
        let mut filesystems = Vec::new();
        for (i, p) in recipe.disk.iter().flat_map(|d| d.partitions.iter()).enumerate() {
            let at = format!("disk.partitions[{i}]");
            if p.type_ == "root-x86-64" {
                filesystems.push(FsNeed { fs: p.filesystem, role: "root filesystem", at: at.clone(), required: true });
            }
            if p.grow {
                filesystems.push(FsNeed { fs: p.filesystem, role: "growing partition", at: at.clone(), required: false });
            }
            if p.is_oem() {
                filesystems.push(FsNeed { fs: p.filesystem, role: "OEM partition", at, required: false });
            }
        }
        let generic = recipe.kernel.as_ref().is_some_and(|k| k.drivers == Drivers::Generic);
        Needs { filesystems, config_drive: config_drive(oem), generic }
    }
}

/// Why the agent may read a config drive, if it may: the OEM
/// configuration's `metadata.sources` names `config-drive` (the vpc
/// platform's layer does), or there is no OEM configuration at all, and
/// the agent then tries every source (`oem/agent/src/cloud.rs`, `Oem::uses`).
/// Layers 30 and 40 (config.d, `oem.*` kernel parameters) are not looked at.
pub fn config_drive(oem: Option<&crate::oem::Rendered>) -> Option<String> {
    let Some(r) = oem else {
        return Some("config drive: no OEM configuration, the agent tries every source".into());
    };
    let reads = match r.merged.pointer("/metadata/sources").and_then(Value::as_array) {
        Some(sources) => sources.iter().any(|s| s == "config-drive"),
        None => true,
    };
    let platform = r.merged.get("platform").and_then(Value::as_str).unwrap_or("unnamed");
    reads.then(|| format!("config drive, platform {platform}"))
}

/// A module the builder added, and why (as the manifest records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Added {
    pub name: String,
    pub reason: String,
}

/// What became of a module the boot path wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    /// Built into the kernel: nothing to add.
    BuiltIn,
    /// Not in the package: skipped.
    Absent,
}

/// One module the boot path wants, why, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub reason: String,
    pub outcome: Outcome,
}

/// The recipe's modules and what the builder decided to add to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// What [`Kernel::module_order`] resolves: the recipe's names in its
    /// order, `virtio_pci` just before the first driver that needs it, the
    /// other additions after.
    pub names: Vec<String>,
    /// In the order they were made. A module the recipe lists, or that an
    /// earlier decision covers, gets none.
    pub decisions: Vec<Decision>,
}

impl Choice {
    fn has(&self, name: &str) -> bool {
        let n = normalise(name);
        self.names.iter().any(|x| normalise(x) == n)
    }

    /// The added modules and why.
    pub fn added(&self) -> Vec<Added> {
        let added = self.decisions.iter().filter(|d| d.outcome == Outcome::Added);
        added.map(|d| Added { name: d.name.clone(), reason: d.reason.clone() }).collect()
    }

    /// Add `name` at `at` (else at the end) unless it is there already or
    /// built in; when it is missing, skip it, or fail for a `required`
    /// filesystem.
    fn offer(
        &mut self,
        kernel: &Kernel,
        name: &str,
        reason: String,
        required: Option<&FsNeed>,
        at: Option<usize>,
    ) -> Result<(), KernelError> {
        if self.has(name) || self.decisions.iter().any(|d| d.name == name) {
            return Ok(());
        }
        let outcome = if kernel.is_builtin(name) {
            Outcome::BuiltIn
        } else if kernel.has_module(name) {
            Outcome::Added
        } else if let Some(need) = required {
            return Err(KernelError::NoFilesystem {
                at: need.at.clone(),
                role: need.role,
                module: name.into(),
                package: kernel.origin.clone(),
            });
        } else {
            Outcome::Absent
        };
        if outcome == Outcome::Added {
            match at {
                Some(i) => self.names.insert(i, name.into()),
                None => self.names.push(name.into()),
            }
        }
        self.decisions.push(Decision { name: name.into(), reason, outcome });
        Ok(())
    }

    /// One progress line per decision.
    pub fn log_lines(&self, package: &str) -> Vec<String> {
        let line = |d: &Decision| match d.outcome {
            Outcome::Added => format!("modules: + {} ({})", d.name, d.reason),
            Outcome::BuiltIn => format!("modules: {} ({}) is built into the kernel: nothing to add", d.name, d.reason),
            Outcome::Absent => format!("modules: {} ({}) is not in {package}: skipped", d.name, d.reason),
        };
        self.decisions.iter().map(line).collect()
    }
}

/// The recipe's `listed` modules plus what `needs` asks for. A listed name
/// the package does not have is an error naming its index in
/// `kernel.modules`. A bare kernel image (no module tree) gets nothing added.
pub fn choose(kernel: &Kernel, listed: &[String], needs: &Needs) -> Result<Choice, KernelError> {
    for (index, name) in listed.iter().enumerate() {
        if !kernel.has_module(name) && !kernel.is_builtin(name) {
            return Err(KernelError::NoModule {
                index,
                name: name.clone(),
                package: kernel.origin.clone(),
                release: kernel.release.clone(),
            });
        }
    }
    let mut c = Choice { names: listed.to_vec(), ..Choice::default() };
    if !kernel.has_module_tree() {
        return Ok(c);
    }
    for need in &needs.filesystems {
        for (k, m) in fs_modules(need.fs).iter().enumerate() {
            // The filesystem's own module is required for the root; its
            // NLS tables are not (a root on vfat mounts with other options).
            let required = (need.required && k == 0).then_some(need);
            c.offer(kernel, m, format!("{}, {}", need.role, need.at), required, None)?;
        }
    }
    if let Some(why) = &needs.config_drive {
        for m in CONFIG_DRIVE {
            c.offer(kernel, m, why.clone(), None, None)?;
        }
    }
    if needs.generic {
        for m in GENERIC {
            c.offer(kernel, m, "drivers: generic".into(), None, None)?;
        }
    }
    // The virtio PCI transport, before the first driver that needs it,
    // unless the recipe names a transport (virtio_mmio for a microvm).
    if !c.names.iter().any(|n| VIRTIO_TRANSPORTS.contains(&normalise(n).as_str())) {
        let mut first = None;
        for (i, n) in c.names.iter().enumerate() {
            let n = normalise(n);
            if is_virtio_driver(&n, &kernel.direct_depends(&n)?) {
                first = Some((i, n));
                break;
            }
        }
        if let Some((i, driver)) = first {
            c.offer(kernel, "virtio_pci", format!("transport for {driver}"), None, Some(i))?;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Inode, Kind, Meta, Tree};

    /// A relocatable x86-64 ELF with only a `.modinfo` section, as much of
    /// a `.ko` as [`super::super::kernel::depends`] reads.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let info = modinfo.as_bytes();
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let info_off = 64u64;
        let str_off = info_off + info.len() as u64;
        let sh_off = (str_off + shstrtab.len() as u64).next_multiple_of(8);
        let mut f = Vec::new();
        f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes()); // entry
        f.extend_from_slice(&0u64.to_le_bytes()); // phoff
        f.extend_from_slice(&sh_off.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes()); // flags
        for v in [64u16, 0, 0, 64, 3, 2] {
            f.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        }
        f.extend_from_slice(info);
        f.extend_from_slice(shstrtab);
        f.resize(sh_off as usize, 0);
        let mut sh = |name: u32, kind: u32, flags: u64, off: u64, size: u64| {
            f.extend_from_slice(&name.to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            f.extend_from_slice(&0u64.to_le_bytes()); // addr
            f.extend_from_slice(&off.to_le_bytes());
            f.extend_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&[0u8; 8]); // link, info
            f.extend_from_slice(&1u64.to_le_bytes()); // addralign
            f.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        sh(0, 0, 0, 0, 0);
        sh(1, 1, 2, info_off, info.len() as u64); // .modinfo: PROGBITS, ALLOC
        sh(10, 3, 0, str_off, shstrtab.len() as u64); // .shstrtab: STRTAB
        f
    }

    /// A kernel package made from a `modules.dep` (`kernel/x/a.ko: kernel/y/b.ko …`)
    /// and a `modules.builtin`: each module's `.ko` says its dependencies in
    /// `.modinfo`, as Debian's do.
    fn kernel(modules_dep: &str, builtin: &str) -> Kernel {
        let release = "6.1.0-test-amd64";
        let mut t = Tree::new(0);
        let file = |c: Content| Inode { meta: Meta::new(0o644, 0), kind: Kind::File(c) };
        t.insert(format!("/boot/vmlinuz-{release}").as_bytes(), file(Content::bytes(b"kernel".to_vec()))).unwrap();
        let stem = |p: &str| p.rsplit('/').next().unwrap().trim_end_matches(".ko").to_string();
        for line in modules_dep.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (ko, deps) = line.split_once(':').unwrap();
            let deps: Vec<String> = deps.split_whitespace().map(stem).collect();
            let info = format!("license=GPL\0depends={}\0name={}\0", deps.join(","), stem(ko));
            t.insert(format!("/lib/modules/{release}/{ko}").as_bytes(), file(Content::bytes(fake_ko(&info)))).unwrap();
        }
        t.insert(format!("/lib/modules/{release}/modules.builtin").as_bytes(), file(Content::bytes(builtin.as_bytes().to_vec()))).unwrap();
        Kernel::from_trees("linux-image-test", &[t]).unwrap()
    }

    /// The Debian cloud kernel in small: ext4 and nvme built in, no ahci.
    const DEP: &str = "
        kernel/drivers/virtio/virtio_ring.ko:
        kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
        kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
        kernel/drivers/virtio/virtio_pci_modern_dev.ko:
        kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko
        kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
        kernel/drivers/net/net_failover.ko:
        kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko
        kernel/drivers/scsi/scsi_common.ko:
        kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
        kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
        kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko
        kernel/drivers/cdrom/cdrom.ko:
        kernel/drivers/scsi/sr_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/cdrom/cdrom.ko kernel/drivers/scsi/scsi_common.ko
        kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
        kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko
        kernel/drivers/hv/hv_vmbus.ko:
        kernel/drivers/scsi/hv_storvsc.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/hv/hv_vmbus.ko
        kernel/drivers/net/hyperv/hv_netvsc.ko: kernel/drivers/hv/hv_vmbus.ko
        kernel/drivers/scsi/vmw_pvscsi.ko: kernel/drivers/scsi/scsi_mod.ko
        kernel/drivers/net/vmxnet3/vmxnet3.ko:
        kernel/drivers/block/xen-blkfront.ko:
        kernel/drivers/net/xen-netfront.ko:
        kernel/fs/fuse/fuse.ko:
        kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
        kernel/lib/libcrc32c.ko:
        kernel/fs/btrfs/btrfs.ko: kernel/lib/libcrc32c.ko
        kernel/fs/fat/fat.ko:
        kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
        kernel/fs/nls/nls_cp437.ko:
        kernel/fs/nls/nls_utf8.ko:
        kernel/fs/isofs/isofs.ko: kernel/drivers/cdrom/cdrom.ko
    ";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/drivers/nvme/host/nvme.ko\nkernel/fs/jbd2/jbd2.ko\n";

    /// A recipe with a root partition of `root_fs` (if any), the `oem`
    /// platform (if any), the `drivers` choice, and its needs.
    fn needs(root_fs: Option<&str>, platform: Option<&str>, drivers: &str) -> Needs {
        let mut r = serde_json::json!({
            "name": "t",
            "kernel": {"package": "linux-image-test", "drivers": drivers},
            "disk": {"partitions": [{"label": "ESP", "type": "esp", "size": "64MiB"}]},
        });
        if let Some(fs) = root_fs {
            let p = serde_json::json!({"label": "root", "type": "root-x86-64", "size": "fill", "filesystem": fs});
            r["disk"]["partitions"].as_array_mut().unwrap().push(p);
        }
        if let Some(p) = platform {
            r["oem"] = serde_json::json!({ "platform": p });
        }
        let recipe: Recipe = serde_json::from_value(r).unwrap();
        let oem = crate::oem::wanted(&recipe).then(|| crate::oem::render(&recipe));
        Needs::of(&recipe, oem.as_ref())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn added(c: &Choice) -> Vec<(String, String)> {
        c.added().into_iter().map(|a| (a.name, a.reason)).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// The modules that were not added: (name, built in).
    fn skipped(c: &Choice) -> Vec<(&str, bool)> {
        let not_added = c.decisions.iter().filter(|d| d.outcome != Outcome::Added);
        not_added.map(|d| (d.name.as_str(), d.outcome == Outcome::BuiltIn)).collect()
    }

    fn order(k: &Kernel, c: &Choice) -> Vec<String> {
        k.module_order(&c.names).unwrap().into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn virtio_blk_alone_gets_its_transport_first() {
        let k = kernel(DEP, BUILTIN);
        let c = choose(&k, &strings(&["virtio_blk"]), &needs(Some("ext4"), Some("qemu"), "needed")).unwrap();
        assert_eq!(added(&c), pairs(&[("virtio_pci", "transport for virtio_blk")]));
        // ext4 is built in: nothing to add, and the log says so.
        assert_eq!(skipped(&c), [("ext4", true)]);
        assert_eq!(
            order(&k, &c),
            ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "virtio_blk"],
            "the transport, with its dependencies, loads before the driver"
        );
        assert_eq!(
            c.log_lines("linux-image-test"),
            [
                "modules: ext4 (root filesystem, disk.partitions[1]) is built into the kernel: nothing to add",
                "modules: + virtio_pci (transport for virtio_blk)"
            ]
        );
    }

    #[test]
    fn the_root_filesystem_comes_with_its_dependencies() {
        let k = kernel(DEP, BUILTIN);
        let c = choose(&k, &strings(&["virtio_blk"]), &needs(Some("btrfs"), Some("metal"), "needed")).unwrap();
        assert_eq!(added(&c), pairs(&[("btrfs", "root filesystem, disk.partitions[1]"), ("virtio_pci", "transport for virtio_blk")]));
        let o = order(&k, &c);
        assert!(o.ends_with(&strings(&["virtio_blk", "libcrc32c", "btrfs"])), "{o:?}");
        // A vfat root brings the NLS tables its default mount options need.
        let c = choose(&k, &[], &needs(Some("vfat"), Some("metal"), "needed")).unwrap();
        let want = "root filesystem, disk.partitions[1]";
        assert_eq!(added(&c), pairs(&[("vfat", want), ("nls_cp437", want), ("nls_utf8", want)]));
        assert_eq!(order(&k, &c), ["fat", "vfat", "nls_cp437", "nls_utf8"]);
        // A root without a filesystem the builder knows: nothing to add.
        let c = choose(&k, &[], &needs(Some("none"), Some("metal"), "needed")).unwrap();
        assert_eq!(c, Choice::default());
    }

    #[test]
    fn a_root_filesystem_the_kernel_lacks_is_an_error() {
        let k = kernel(DEP.replace("kernel/fs/btrfs/btrfs.ko: kernel/lib/libcrc32c.ko", "").as_str(), BUILTIN);
        let e = choose(&k, &[], &needs(Some("btrfs"), Some("qemu"), "needed")).unwrap_err().to_string();
        assert!(e.starts_with("disk.partitions[1]: the root filesystem needs `btrfs`"), "{e}");
        assert!(e.contains("linux-image-test"), "{e}");
    }

    #[test]
    fn vpc_and_no_oem_read_config_drives_qemu_and_metal_do_not() {
        let k = kernel(DEP, BUILTIN);
        let listed = strings(&["virtio_net"]);
        for (platform, reason) in
            [(Some("vpc"), "config drive, platform vpc"), (None, "config drive: no OEM configuration, the agent tries every source")]
        {
            let c = choose(&k, &listed, &needs(Some("ext4"), platform, "needed")).unwrap();
            assert_eq!(
                added(&c),
                pairs(&[
                    ("vfat", reason),
                    ("nls_cp437", reason),
                    ("nls_utf8", reason),
                    ("isofs", reason),
                    ("virtio_pci", "transport for virtio_net")
                ]),
                "{platform:?}"
            );
            assert_eq!(c.names, ["virtio_pci", "virtio_net", "vfat", "nls_cp437", "nls_utf8", "isofs"]);
            let o = order(&k, &c);
            assert!(o.ends_with(&strings(&["fat", "vfat", "nls_cp437", "nls_utf8", "cdrom", "isofs"])), "{o:?}");
        }
        for platform in ["qemu", "metal"] {
            let c = choose(&k, &listed, &needs(Some("ext4"), Some(platform), "needed")).unwrap();
            assert_eq!(added(&c), pairs(&[("virtio_pci", "transport for virtio_net")]), "{platform}");
        }
    }

    #[test]
    fn listed_and_builtin_modules_are_not_added_again() {
        let k = kernel(DEP, BUILTIN);
        // The recipe lists the transport and the readers itself.
        let listed = strings(&["virtio_pci", "virtio_blk", "vfat", "nls-cp437", "nls_utf8", "isofs"]);
        let c = choose(&k, &listed, &needs(Some("ext4"), Some("vpc"), "needed")).unwrap();
        assert_eq!(c.added(), []);
        assert_eq!(c.names, listed);
        // A microvm's recipe names virtio_mmio: no PCI transport then.
        let c = choose(&k, &strings(&["virtio_mmio", "virtio_blk"]), &needs(None, Some("qemu"), "needed")).unwrap();
        assert_eq!(c.added(), []);
        // A transport built into the kernel needs nothing.
        let k = kernel(DEP, &format!("{BUILTIN}kernel/drivers/virtio/virtio_pci.ko\n"));
        let c = choose(&k, &strings(&["virtio_blk"]), &needs(None, Some("qemu"), "needed")).unwrap();
        assert_eq!(c.added(), []);
        assert_eq!(c.log_lines("p"), ["modules: virtio_pci (transport for virtio_blk) is built into the kernel: nothing to add"]);
    }

    #[test]
    fn what_counts_as_a_virtio_driver() {
        let k = kernel(DEP, BUILTIN);
        for (listed, driver) in [
            ("virtio_scsi", Some("virtio_scsi")),
            ("virtiofs", Some("virtiofs")),
            ("virtio", None),
            ("virtio_ring", None),
            ("sd_mod", None),
        ] {
            let c = choose(&k, &strings(&["sd_mod", listed]), &needs(None, Some("qemu"), "needed")).unwrap();
            let want: Vec<(String, String)> = driver.map(|d| ("virtio_pci".into(), format!("transport for {d}"))).into_iter().collect();
            assert_eq!(added(&c), want, "{listed}");
            if driver.is_some() {
                assert_eq!(c.names, ["sd_mod", "virtio_pci", listed], "the transport goes just before the driver");
            }
        }
    }

    #[test]
    fn generic_drivers_skip_what_is_built_in_or_absent() {
        let k = kernel(DEP, BUILTIN);
        let c = choose(&k, &[], &needs(Some("ext4"), Some("qemu"), "generic")).unwrap();
        let names: Vec<String> = c.added().into_iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "virtio_pci",
                "virtio_blk",
                "virtio_scsi",
                "virtio_net",
                "ata_piix",
                "sd_mod",
                "sr_mod",
                "hv_storvsc",
                "hv_netvsc",
                "vmw_pvscsi",
                "vmxnet3",
                "xen_blkfront",
                "xen_netfront"
            ]
        );
        assert!(c.added().iter().all(|a| a.reason == "drivers: generic"));
        assert_eq!(skipped(&c), [("ext4", true), ("nvme", true), ("ahci", false), ("mptspi", false), ("e1000", false), ("e1000e", false)]);
        let log = c.log_lines("linux-image-test");
        assert!(log.contains(&"modules: + hv_storvsc (drivers: generic)".to_string()), "{log:?}");
        assert!(log.contains(&"modules: nvme (drivers: generic) is built into the kernel: nothing to add".to_string()), "{log:?}");
        assert!(log.contains(&"modules: ahci (drivers: generic) is not in linux-image-test: skipped".to_string()), "{log:?}");
        // Dependencies come along, each once, before their users; `-` names
        // resolve to the package's files.
        let o = order(&k, &c);
        assert!(o.iter().position(|m| m == "hv_vmbus") < o.iter().position(|m| m == "hv_storvsc"), "{o:?}");
        assert_eq!(o.iter().filter(|m| *m == "scsi_mod").count(), 1, "{o:?}");
        assert!(o.contains(&"xen_blkfront".to_string()), "{o:?}");
        // Without `generic`, none of it.
        let c = choose(&k, &[], &needs(Some("ext4"), Some("qemu"), "needed")).unwrap();
        assert_eq!(c.added(), []);
    }

    #[test]
    fn oem_and_growing_partitions_bring_their_filesystems() {
        let k = kernel(DEP, BUILTIN);
        let r: Recipe = serde_json::from_value(serde_json::json!({
            "name": "t",
            "kernel": {"package": "linux-image-test"},
            "oem": {"platform": "qemu"},
            "disk": {"size": "1GiB", "partitions": [
                {"label": "ESP", "type": "esp", "size": "64MiB"},
                {"label": "OEM", "type": "linux", "size": "8MiB", "filesystem": "vfat"},
                {"label": "root", "type": "root-x86-64", "size": "256MiB", "filesystem": "ext4"},
                {"label": "data", "type": "linux", "size": "fill", "filesystem": "btrfs", "grow": true}
            ]}
        }))
        .unwrap();
        let oem = crate::oem::render(&r);
        let c = choose(&k, &[], &Needs::of(&r, Some(&oem))).unwrap();
        assert_eq!(
            added(&c),
            pairs(&[
                ("vfat", "OEM partition, disk.partitions[1]"),
                ("nls_cp437", "OEM partition, disk.partitions[1]"),
                ("nls_utf8", "OEM partition, disk.partitions[1]"),
                ("btrfs", "growing partition, disk.partitions[3]")
            ])
        );
    }

    #[test]
    fn a_listed_name_the_package_lacks_keeps_its_index() {
        let k = kernel(DEP, BUILTIN);
        let e = choose(&k, &strings(&["virtio_blk", "no_such_module"]), &needs(Some("btrfs"), None, "generic")).unwrap_err();
        assert!(e.to_string().starts_with("kernel.modules[1]: module `no_such_module`"), "{e}");
    }

    #[test]
    fn a_bare_kernel_image_gets_nothing_added() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinuz");
        std::fs::write(&p, b"kernel").unwrap();
        let k = Kernel::from_image(&p).unwrap();
        let c = choose(&k, &[], &needs(Some("btrfs"), Some("vpc"), "generic")).unwrap();
        assert_eq!(c, Choice::default());
    }
}
