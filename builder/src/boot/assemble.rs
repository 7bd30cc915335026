//! Putting a bootable image together: the kernel from its package, the
//! initramfs (the recipe's tree plus the guest agent as `/init` and the
//! kernel modules in dependency order), the command line, the UKI for UEFI
//! and the files GRUB reads for BIOS.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::agent::{Agent, AgentRecord};
use super::kernel::{Kernel, KernelError};
use super::packages::{is_package_name, Packages};
use crate::plan::Plan;
use crate::recipe::{Filesystem, Firmware, Loaded};
use crate::tree::content::SourceFile;
use crate::tree::oci::ImageConfig;
use crate::tree::{Content, Inode, Kind, Meta, Tree};
use crate::Error;

/// Everything the boot stage produced, still in temp files.
pub struct BootParts {
    pub kernel: Kernel,
    pub cmdline: String,
    /// The compressed initramfs.
    pub initramfs: crate::files::TempOut,
    /// The UKI, when UEFI boot or the `uki` output asks for it.
    pub uki: Option<crate::files::TempOut>,
    /// Files the builder adds to the ESP: (tree path, content).
    pub esp_files: Vec<(String, Content)>,
    /// Modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// The modules the builder added to `kernel.modules`, and why.
    pub modules_added: Vec<super::modules::Added>,
    /// One line per added or skipped module, for the progress output.
    pub module_log: Vec<String>,
    /// The guest agent that went in as `/init`.
    pub agent: AgentRecord,
}

fn file_inode(mode: u32, epoch: i64, content: Content) -> Inode {
    Inode { meta: Meta::new(mode, epoch), kind: Kind::File(content) }
}

/// Load the kernel the recipe names.
pub fn load_kernel(loaded: &Loaded, spool_dir: &Path) -> Result<Kernel, Error> {
    let spec = loaded.recipe.kernel.as_ref().expect("caller checked");
    let at = |e: KernelError| Error::Other(format!("kernel: {e}"));
    if let Some(image) = &spec.image {
        return Kernel::from_image(&loaded.base_dir.join(image)).map_err(at);
    }
    let name = spec.package.as_deref().expect("validated");
    let debs = if is_package_name(name) {
        let p = Packages::open(&loaded.base_dir).map_err(|e| Error::Other(format!("kernel.package: {e}")))?;
        super::kernel::package_debs(&p, name).map_err(|e| Error::Other(format!("kernel.package: {e}")))?
    } else {
        vec![loaded.base_dir.join(name)]
    };
    let mut trees = Vec::new();
    for d in &debs {
        let mut t = Tree::new(loaded.recipe.epoch());
        crate::tree::tar::apply_deb(&mut t, d, "/", spool_dir).map_err(|e| Error::Layer { at: "kernel.package".into(), source: e })?;
        trees.push(t);
    }
    Kernel::from_trees(name, &trees).map_err(at)
}

/// The root partition (type `root-x86-64`), if any: (PARTUUID, fstype).
fn root_partition(loaded: &Loaded, plan: &Plan) -> Option<(String, &'static str)> {
    let disk = loaded.recipe.disk.as_ref()?;
    disk.partitions.iter().zip(&plan.partitions).find(|(p, _)| p.type_ == "root-x86-64").map(|(p, pp)| {
        let fs = match p.filesystem {
            Filesystem::Ext4 => "ext4",
            Filesystem::Btrfs => "btrfs",
            Filesystem::Vfat => "vfat",
            Filesystem::None => "auto",
        };
        (pp.part_guid.to_string(), fs)
    })
}

/// Build the initramfs, command line and UKI for a recipe with a `kernel`.
/// `trees` are the recipe's trees by name (the initramfs starts from
/// `initramfs.tree`), `oci` the run configuration of a tree's last `oci`
/// layer, `oem` the rendered OEM layers 00–20 (they go into the initramfs
/// when the disk has no OEM partition).
pub fn assemble(
    loaded: &Loaded,
    trees: &BTreeMap<String, Tree>,
    oci: &BTreeMap<String, ImageConfig>,
    oem: Option<&crate::oem::Rendered>,
    plan: &Plan,
    agent: &Agent,
    out_dir: &Path,
) -> Result<BootParts, Error> {
    let recipe = &loaded.recipe;
    let spec = recipe.kernel.as_ref().expect("caller checked");
    let epoch = recipe.epoch();
    let kernel = load_kernel(loaded, out_dir)?;

    // Command line: the recipe's, plus the root the builder knows about.
    let mut cmdline = spec.cmdline.clone().unwrap_or_else(|| "console=ttyS0,115200".into());
    let root = root_partition(loaded, plan);
    if let Some((partuuid, fs)) = &root {
        cmdline.push_str(&format!(" root=PARTUUID={partuuid} rootfstype={fs} rw"));
        if let Some(init) = &recipe.init {
            cmdline.push_str(&format!(" init={}", init[0]));
        }
    }
    // First-boot grow: the agent finds the partition by its PARTUUID.
    if let Some(disk) = &recipe.disk {
        if let Some(pp) = disk.partitions.iter().zip(&plan.partitions).find(|(p, _)| p.grow).map(|(_, pp)| pp) {
            cmdline.push_str(&format!(" agent.grow={}", pp.part_guid));
        }
    }
    // The OEM partition: the agent waits for it by PARTUUID and mounts it
    // on /usr/share/oem.
    let oem_partuuid = match (&recipe.disk, crate::oem::oem_partition(recipe)) {
        (Some(_), Some(i)) => Some(plan.partitions[i].part_guid.to_string()),
        _ => None,
    };
    // The recipe's modules plus what the boot path needs: the filesystems
    // the agent mounts, the config drive's, the virtio transport (and the
    // generic drivers when asked for).
    let needs = super::modules::Needs::of(recipe, oem);
    let choice = super::modules::choose(&kernel, &spec.modules, &needs).map_err(|e| Error::Other(e.to_string()))?;
    let cmdline = cmdline.trim().to_string();
    kernel.check_cmdline(&cmdline).map_err(|e| Error::Other(e.to_string()))?;
    let order = kernel.module_order(&choice.names).map_err(|e| Error::Other(e.to_string()))?;

    // The initramfs tree: the recipe's, then the agent and the modules.
    let mut tree = match &recipe.initramfs {
        Some(i) => trees[&i.tree].clone(),
        None => Tree::new(epoch),
    };
    let agent_content = agent.content()?;
    let agent_record = agent.record()?;
    let ins = |tree: &mut Tree, path: &str, inode: Inode| {
        tree.insert(path.as_bytes(), inode).map_err(|e| Error::Other(format!("initramfs: {e}")))
    };
    ins(&mut tree, "/init", file_inode(0o755, epoch, agent_content))?;
    // Device nodes the agent's runtime needs before devtmpfs is mounted.
    for (path, mode, major, minor) in [("/dev/console", 0o600, 5, 1), ("/dev/null", 0o666, 1, 3)] {
        if tree.find(path.as_bytes()).is_none() {
            ins(&mut tree, path, Inode { meta: Meta::new(mode, epoch), kind: Kind::CharDev { major, minor } })?;
        }
    }
    let mut list = String::new();
    for m in &order {
        let path = format!("/lib/modules/{}/{}", kernel.release, m.rel_path);
        ins(&mut tree, &path, file_inode(0o644, epoch, m.content.clone()))?;
        list.push_str(&m.rel_path);
        list.push('\n');
    }
    ins(&mut tree, "/etc/agent/modules", file_inode(0o644, epoch, Content::bytes(list)))?;
    if root.is_none() {
        // A container image in the initramfs tree brings its command,
        // environment, working directory and user; the recipe's `init`
        // overrides the command only.
        let image = recipe.initramfs.as_ref().and_then(|i| oci.get(&i.tree));
        let argv = recipe.init.clone().or_else(|| image.map(|c| c.argv()).filter(|a| !a.is_empty()));
        if let Some(init) = &argv {
            let argv: String = init.iter().map(|a| format!("{a}\n")).collect();
            ins(&mut tree, "/etc/agent/init", file_inode(0o644, epoch, Content::bytes(argv)))?;
        }
        if let Some(c) = image {
            if let Some(bad) = c.env.iter().find(|e| e.contains('\n') || !e.contains('=')) {
                return Err(Error::Other(format!(
                    "initramfs.tree: the container image's Env entry {bad:?} is not one KEY=VALUE line: /etc/agent/env cannot hold it"
                )));
            }
            if !c.env.is_empty() {
                let env: String = c.env.iter().map(|e| format!("{e}\n")).collect();
                ins(&mut tree, "/etc/agent/env", file_inode(0o644, epoch, Content::bytes(env)))?;
            }
            if let Some(w) = &c.working_dir {
                ins(&mut tree, "/etc/agent/workdir", file_inode(0o644, epoch, Content::bytes(format!("{w}\n"))))?;
            }
            if let Some(u) = &c.user {
                ins(&mut tree, "/etc/agent/user", file_inode(0o644, epoch, Content::bytes(format!("{u}\n"))))?;
            }
        }
    }
    if let Some(u) = &oem_partuuid {
        ins(&mut tree, "/etc/agent/oem-partition", file_inode(0o644, epoch, Content::bytes(format!("PARTUUID={u}\n"))))?;
    }
    // OEM configuration without an OEM partition: the same files in the
    // initramfs, and the merge where the agent reads it.
    if let Some(oem) = oem.filter(|_| crate::oem::oem_partition(recipe).is_none()) {
        oem.add_to(&mut tree, "/usr/share/oem").map_err(|e| Error::Other(format!("initramfs: {e}")))?;
        let merged = crate::oem::to_json(&oem.merged);
        ins(&mut tree, "/etc/agent/oem.json", file_inode(0o644, epoch, Content::bytes(merged)))?;
    }
    let (compression, level) = recipe.initramfs.as_ref().map(|i| (i.compression, i.level)).unwrap_or_default();
    let mut initramfs = crate::files::temp_in(out_dir, &recipe.name)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, initramfs.as_file_mut());
        crate::initramfs::write(&tree, compression, level, &mut w)?;
        w.flush().map_err(|e| Error::io("writing the initramfs", e))?;
    }
    let initrd_content = shared(&initramfs, "initramfs")?;

    let firmware = recipe.firmware();
    let mut esp_files = Vec::new();
    let wants_uki = firmware.contains(&Firmware::Uefi) || recipe.outputs.contains(&crate::recipe::Output::Uki);
    let mut uki = None;
    if wants_uki {
        let stub = stub(loaded, out_dir)?;
        let osrel =
            format!("NAME=\"build-image\"\nID=build-image\nIMAGE_ID={}\nPRETTY_NAME=\"{} (build-image)\"\n", recipe.name, recipe.name);
        let uname = kernel.release.clone();
        let mut sections = vec![
            super::uki::Section { name: ".osrel", data: super::uki::SectionData::Bytes(osrel.as_bytes()) },
            super::uki::Section { name: ".cmdline", data: super::uki::SectionData::Bytes(cmdline.as_bytes()) },
        ];
        if !uname.is_empty() {
            sections.push(super::uki::Section { name: ".uname", data: super::uki::SectionData::Bytes(uname.as_bytes()) });
        }
        sections.push(super::uki::Section { name: ".initrd", data: super::uki::SectionData::Content(&initrd_content) });
        sections.push(super::uki::Section { name: ".linux", data: super::uki::SectionData::Content(&kernel.image) });
        let f = crate::files::temp_in(out_dir, &recipe.name)?;
        super::uki::write(&stub.0, &stub.1, &sections, f.as_file()).map_err(|e| Error::Other(e.to_string()))?;
        if firmware.contains(&Firmware::Uefi) {
            esp_files.push(("/EFI/BOOT/BOOTX64.EFI".to_string(), shared(&f, "UKI")?));
        }
        uki = Some(f);
    }
    if firmware.contains(&Firmware::Bios) {
        esp_files.push(("/boot/vmlinuz".to_string(), kernel.image.clone()));
        esp_files.push(("/boot/initrd.img".to_string(), initrd_content.clone()));
    }
    let modules = order.iter().map(|m| m.name.clone()).collect();
    let module_log = choice.log_lines(&kernel.origin);
    Ok(BootParts { kernel, cmdline, initramfs, uki, esp_files, modules, modules_added: choice.added(), module_log, agent: agent_record })
}

/// A content reference to a finished temp file.
fn shared(f: &crate::files::TempOut, what: &str) -> Result<Content, Error> {
    let file = f.as_file().try_clone().map_err(|e| Error::io(format!("reopening the {what}"), e))?;
    let len = file.metadata().map_err(|e| Error::io(format!("reading the {what}"), e))?.len();
    let source = Arc::new(SourceFile { path: f.path().to_path_buf(), file });
    Ok(Content::Slice { source, offset: 0, len, sparse: None })
}

/// systemd-stub from the pinned `systemd-boot-efi` package.
fn stub(loaded: &Loaded, spool_dir: &Path) -> Result<(Content, String), Error> {
    let packages = Packages::open(&loaded.base_dir).map_err(|e| Error::Other(format!("UEFI boot needs systemd-stub: {e}")))?;
    let deb = packages.deb("systemd-boot-efi").map_err(|e| Error::Other(format!("UEFI boot needs systemd-stub: {e}")))?;
    let mut t = Tree::new(loaded.recipe.epoch());
    crate::tree::tar::apply_deb(&mut t, &deb, "/", spool_dir).map_err(|e| Error::Layer { at: "systemd-boot-efi".into(), source: e })?;
    let path = b"/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    match t.find(path).map(|id| &t.inode(id).kind) {
        Some(Kind::File(c)) => Ok((c.clone(), format!("{}:/usr/lib/systemd/boot/efi/linuxx64.efi.stub", deb.display()))),
        _ => Err(Error::Other(format!("{} has no linuxx64.efi.stub", deb.display()))),
    }
}
