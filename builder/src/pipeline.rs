//! The build: recipe → trees → plan → regions of one sparse file → outputs →
//! manifest. Everything is written to temp files in the output folder and
//! renamed into place only when the whole build has succeeded, so a failed
//! build leaves no partial output and never clobbers the last good image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::disk::Region;
use crate::files::temp_in;
use crate::fs::FsParams;
use crate::output::manifest::{Artifact, Input, Manifest};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::recipe::{Filesystem, Layer, Loaded, Output};
use crate::tree::{LayerError, Tree};
use crate::Error;

/// How to run a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// `SOURCE_DATE_EPOCH` from the environment, overriding the recipe's.
    pub env_epoch: Option<i64>,
    /// Show progress on stderr.
    pub progress: bool,
    /// The guest agent binary (`--agent`); else `$BUILD_IMAGE_AGENT`, else
    /// the agent built into this program.
    pub agent: Option<PathBuf>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// Things the build did but the user should know: printed by the CLI
    /// as `warning: …` lines, even with `-q`.
    pub warnings: Vec<String>,
}

/// Resolved trees plus the digests of the inputs they came from.
pub struct Trees {
    pub trees: BTreeMap<String, Tree>,
    pub inputs: Vec<Input>,
    /// `dir` inputs whose digest is still to be computed: (index into
    /// `inputs`, a snapshot of the tree right after the layer, its `to`).
    /// They are hashed on a second thread while the image is written.
    pub pending_dirs: Vec<(usize, Tree, String)>,
    /// Per tree, the run configuration of its last `oci` layer.
    pub oci: BTreeMap<String, crate::tree::oci::ImageConfig>,
    /// The OEM configuration (layers 00–20), when the recipe has an `oem`
    /// section or an OEM partition.
    pub oem: Option<crate::oem::Rendered>,
}

impl Trees {
    /// Compute the digests of the `dir` inputs.
    pub fn digest_dirs(pending: &[(usize, Tree, String)], inputs: &mut [Input]) -> Result<(), Error> {
        for (i, tree, to) in pending {
            let at = inputs[*i].layer.clone();
            let shown = inputs[*i].path.clone();
            inputs[*i] = Input::dir(&at, &shown, tree, to).map_err(|source| Error::Layer { at, source })?;
        }
        Ok(())
    }
}

/// The name under which the OEM partition's tree (its `tree`, if any, plus
/// the rendered OEM files) is kept in [`Trees::trees`]; validation refuses
/// it as a recipe tree name.
pub const OEM_TREE: &str = "<oem>";

/// A finished temp file waiting to be renamed to its final name.
struct Pending {
    tmp: crate::files::TempOut,
    dest: PathBuf,
}

/// Run a whole build.
pub fn build(recipe_path: &Path, opts: &BuildOptions) -> Result<BuildResult, Error> {
    let progress = Progress::new(opts.progress);
    let loaded = crate::recipe::load(recipe_path, opts.env_epoch)?;
    // What can be known before writing anything: a Debian root's set is
    // pinned, and this machine can install it.
    crate::debian::check(&loaded)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(format!("creating the output folder {}", opts.out_dir.display()), e))?;
    let disk_size = std::cell::Cell::new(None);
    build_in(&loaded, opts, &progress, &disk_size).map_err(|e| {
        if e.is_no_space() && !matches!(e, Error::NoSpace { .. }) {
            Error::NoSpace { dir: opts.out_dir.clone(), free: free_bytes(&opts.out_dir), image: disk_size.get(), source: Box::new(e) }
        } else {
            e
        }
    })
}

/// Free bytes for this user on the filesystem of `dir` (0 if unknown).
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return 0 };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path; statvfs fills `st` on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    st.f_bavail.saturating_mul(st.f_frsize)
}

/// [`build`] once the recipe is loaded and the output folder exists;
/// `disk_size` gets the disk image's size once it is planned (for the
/// message when the folder fills up).
fn build_in(
    loaded: &Loaded,
    opts: &BuildOptions,
    progress: &Progress,
    disk_size: &std::cell::Cell<Option<u64>>,
) -> Result<BuildResult, Error> {
    let mut trees = resolve_trees(loaded, &opts.out_dir, progress)?;
    let pending_dirs = std::mem::take(&mut trees.pending_dirs);
    let mut inputs = std::mem::take(&mut trees.inputs);
    // The `dir` inputs' digests read every file again: do it on the second
    // core while the image is written and hashed.
    std::thread::scope(|scope| {
        let digests = scope.spawn(|| Trees::digest_dirs(&pending_dirs, &mut inputs).map(|()| inputs));
        let result = build_outputs(loaded, opts, &trees, progress, disk_size).and_then(|built| {
            let artifacts = hash_outputs(&built.pending, progress)?;
            Ok((built, artifacts))
        });
        let inputs = digests.join().expect("digest thread panicked");
        let (built, artifacts) = result?;
        let warnings = built.boot.as_ref().and_then(grub_cmdline_warning).into_iter().collect();
        let mut res = finish(loaded, opts, built, artifacts, inputs?)?;
        res.warnings = warnings;
        Ok(res)
    })
}

/// When the image boots by BIOS too, whether GRUB hands the kernel other
/// parameters than the UKI does (a double quote inside a parameter cannot
/// be carried by GRUB's config; `\` and `'` arrive backslash-escaped).
fn grub_cmdline_warning(b: &crate::output::manifest::BootInfo) -> Option<String> {
    let grub = b.grub.as_ref()?;
    let bios = crate::boot::grub::linux_cmdline(&crate::boot::grub::boot_config(grub.esp_partition, &b.cmdline))?;
    let (uefi, grub_gives) = crate::inspect::param_diff(&b.cmdline, &bios)?;
    if uefi.is_empty() && grub_gives.is_empty() {
        return None; // the same parameters, in another order
    }
    Some(format!(
        "kernel.cmdline: GRUB (boot.firmware \"bios\") hands the kernel `{grub_gives}` where the UKI passes `{uefi}`: GRUB's config cannot carry a double quote inside a parameter, and it backslash-escapes \\ and '. Keep such values to UEFI-only images, or set them in the recipe's `oem` section (or an OEM partition's config.d) instead of `oem.*` parameters"
    ))
}

/// The finished (not yet renamed) outputs and what the manifest says of them.
struct Built {
    pending: Vec<Pending>,
    plan: Plan,
    boot: Option<crate::output::manifest::BootInfo>,
    oci: Option<crate::output::oci::OciReport>,
}

/// Everything up to the finished (not yet renamed) outputs.
fn build_outputs(
    loaded: &Loaded,
    opts: &BuildOptions,
    trees: &Trees,
    progress: &Progress,
    disk_size: &std::cell::Cell<Option<u64>>,
) -> Result<Built, Error> {
    let recipe = &loaded.recipe;
    let progress = progress.clone();
    let plan = plan_for(loaded, trees)?;
    disk_size.set(Some(plan.disk_size));

    let mut pending = Vec::new();
    let dest = |ext: &str| opts.out_dir.join(format!("{}.{ext}", recipe.name));
    let boot = match &recipe.kernel {
        Some(_) => {
            let agent = crate::boot::agent::Agent::find(opts.agent.as_deref())?;
            let step = progress.step("assembling the kernel, initramfs and UKI".into());
            let parts =
                crate::boot::assemble::assemble(loaded, &trees.trees, &trees.oci, trees.oem.as_ref(), &plan, &agent, &opts.out_dir)?;
            step.done();
            for line in &parts.module_log {
                progress.note(line);
            }
            Some(parts)
        }
        None => None,
    };
    let esp_files = boot.as_ref().map(|b| b.esp_files.as_slice()).unwrap_or(&[]);
    let mut boot_info = boot.as_ref().map(|b| crate::output::manifest::BootInfo {
        firmware: recipe.firmware(),
        kernel: b.kernel.origin.clone(),
        kernel_release: b.kernel.release.clone(),
        agent: b.agent.clone(),
        cmdline: b.cmdline.clone(),
        modules: b.modules.clone(),
        modules_added: b.modules_added.clone(),
        grub: None,
    });
    let wants_disk = recipe.outputs.iter().any(|o| matches!(o, Output::Raw | Output::Qcow2 | Output::Vhd | Output::Vmdk));
    if wants_disk {
        let tmp = temp_in(&opts.out_dir, &recipe.name)?;
        write_raw(tmp.as_file(), &plan, trees, esp_files, &progress)?;
        if let Some(b) = boot.as_ref().filter(|_| recipe.firmware().contains(&crate::recipe::Firmware::Bios)) {
            let step = progress.step("installing GRUB for BIOS boot".into());
            let installed = install_bios(tmp.as_file(), loaded, &plan, b, &opts.out_dir)?;
            step.done();
            if let Some(info) = boot_info.as_mut() {
                info.grub = Some(installed);
            }
        }
        let raw = tmp.as_file();
        if recipe.outputs.contains(&Output::Qcow2) {
            let out = temp_in(&opts.out_dir, &recipe.name)?;
            let opts = recipe.qcow2.clone().unwrap_or_default();
            if opts.compress {
                let step = progress.step("converting to compressed qcow2".into());
                let level = opts.level.unwrap_or(6);
                crate::output::qcow2::write_compressed(raw, plan.disk_size, out.as_file(), level, crate::parallel::threads())
                    .map_err(|e| Error::io("writing the compressed qcow2 image", e))?;
                step.done();
            } else {
                let step = progress.step("converting to qcow2".into());
                crate::output::qcow2::write(raw, plan.disk_size, out.as_file(), true, crate::parallel::threads())
                    .map_err(|e| Error::io("writing the qcow2 image", e))?;
                step.done();
            }
            pending.push(Pending { tmp: out, dest: dest("qcow2") });
        }
        if recipe.outputs.contains(&Output::Vhd) {
            let out = temp_in(&opts.out_dir, &recipe.name)?;
            let step = progress.step("converting to VHD".into());
            let id = *crate::plan::derive_uuid(&loaded.digest, "vhd-unique-id").as_bytes();
            crate::output::vhd::write(raw, plan.disk_size, out.as_file(), plan.epoch, id, true)
                .map_err(|e| Error::io("writing the VHD image", e))?;
            step.done();
            pending.push(Pending { tmp: out, dest: dest("vhd") });
        }
        if recipe.outputs.contains(&Output::Vmdk) {
            let out = temp_in(&opts.out_dir, &recipe.name)?;
            let step = progress.step("converting to VMDK (streamOptimized)".into());
            let adapter = match recipe.vmdk.as_ref().map(|v| v.adapter).unwrap_or_default() {
                crate::recipe::VmdkAdapter::Lsilogic => crate::output::vmdk::Adapter::LsiLogic,
                crate::recipe::VmdkAdapter::Ide => crate::output::vmdk::Adapter::Ide,
            };
            let vopts = crate::output::vmdk::VmdkOptions { adapter, ..Default::default() };
            let file_name = format!("{}.vmdk", recipe.name);
            crate::output::vmdk::write(raw, plan.disk_size, out.as_file(), &file_name, &vopts)
                .map_err(|e| Error::io("writing the VMDK image", e))?;
            step.done();
            pending.push(Pending { tmp: out, dest: dest("vmdk") });
        }
        if recipe.outputs.contains(&Output::Raw) {
            pending.push(Pending { tmp, dest: dest("raw") });
        }
    }
    let wants_initramfs = recipe.outputs.iter().any(|o| matches!(o, Output::Initramfs | Output::KernelInitramfs));
    match boot {
        Some(b) => {
            if wants_initramfs {
                pending.push(Pending { tmp: b.initramfs, dest: dest("initramfs") });
            }
            if recipe.outputs.contains(&Output::KernelInitramfs) {
                let out = temp_in(&opts.out_dir, &recipe.name)?;
                let r = b.kernel.image.open().map_err(|e| Error::io("reading the kernel image", e))?;
                r.copy_to(0, b.kernel.image.len(), out.as_file(), 0).map_err(|e| Error::io("writing the kernel image", e))?;
                pending.push(Pending { tmp: out, dest: dest("vmlinuz") });
            }
            if let (true, Some(uki)) = (recipe.outputs.contains(&Output::Uki), b.uki) {
                pending.push(Pending { tmp: uki, dest: dest("efi") });
            }
        }
        None if wants_initramfs => {
            let init = recipe.initramfs.as_ref().expect("validated");
            let tree = &trees.trees[&init.tree];
            let mut tmp = temp_in(&opts.out_dir, &recipe.name)?;
            let step = progress.step(format!("packing the initramfs from tree `{}`", init.tree));
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                crate::initramfs::write(tree, init.compression, init.level, &mut w)?;
                w.flush().map_err(|e| Error::io("writing the initramfs", e))?;
            }
            step.done();
            pending.push(Pending { tmp, dest: dest("initramfs") });
        }
        None => {}
    }
    if recipe.outputs.iter().any(|o| matches!(o, Output::CloudConfig | Output::Ignition)) {
        let oem = trees.oem.clone().unwrap_or_else(|| crate::oem::render(recipe));
        let c = crate::output::coreos::config(recipe, &oem.merged);
        let mut emit = |ext: &str, text: String| -> Result<(), Error> {
            let mut tmp = temp_in(&opts.out_dir, &recipe.name)?;
            tmp.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {ext}"), e))?;
            pending.push(Pending { tmp, dest: dest(ext) });
            Ok(())
        };
        if recipe.outputs.contains(&Output::CloudConfig) {
            emit("cloud-config.yml", crate::output::coreos::cloud_config(&c))?;
        }
        if recipe.outputs.contains(&Output::Ignition) {
            emit("ign", crate::oem::to_json(&crate::output::coreos::ignition(&c)))?;
        }
    }
    let mut oci = None;
    if recipe.outputs.contains(&Output::Oci) {
        let image = recipe.oci.as_ref().expect("validated: `oci` output has its section");
        let reference =
            crate::recipe::ImageRef::parse(&image.tag_or_default(&recipe.name)).map_err(|e| Error::Other(format!("oci.tag: {e}")))?;
        let tmp = temp_in(&opts.out_dir, &recipe.name)?;
        let step = progress.step(format!("writing the container image of tree `{}` as {}", image.tree, reference.familiar()));
        let report = crate::output::oci::write(&trees.trees[&image.tree], image, &reference, recipe.epoch(), tmp.as_file())
            .map_err(|source| Error::Oci { tree: image.tree.clone(), source })?;
        step.done();
        pending.push(Pending { tmp, dest: dest("oci.tar") });
        oci = Some(report);
    }
    Ok(Built { pending, plan, boot: boot_info, oci })
}

/// Sync and hash every finished output.
fn hash_outputs(pending: &[Pending], progress: &Progress) -> Result<Vec<Artifact>, Error> {
    let step = progress.step("hashing the outputs".to_string());
    let mut artifacts = Vec::new();
    for p in pending {
        // The flush to disk waits on the device while the hash runs on the
        // CPU from the page cache: overlap them.
        let f = p.tmp.as_file();
        let (synced, artifact) = std::thread::scope(|s| {
            let sync = s.spawn(|| f.sync_all());
            let artifact = Artifact::of(f, &p.dest);
            (sync.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), artifact)
        });
        synced.map_err(|e| Error::io(format!("syncing {}", p.dest.display()), e))?;
        artifacts.push(artifact?);
    }
    step.done();
    Ok(artifacts)
}

/// Write the manifest and move everything into place, manifest last.
fn finish(loaded: &Loaded, opts: &BuildOptions, built: Built, artifacts: Vec<Artifact>, inputs: Vec<Input>) -> Result<BuildResult, Error> {
    let recipe = &loaded.recipe;
    let Built { mut pending, plan, boot, oci } = built;
    let mut manifest = Manifest::new(loaded, &plan, artifacts, inputs, boot);
    manifest.oci = oci;
    let manifest_path = opts.out_dir.join(format!("{}.manifest.json", recipe.name));
    let mut mtmp = temp_in(&opts.out_dir, &recipe.name)?;
    mtmp.write_all(manifest.to_json().as_bytes()).map_err(|e| Error::io("writing the manifest", e))?;
    mtmp.as_file().sync_all().map_err(|e| Error::io("syncing the manifest", e))?;
    pending.push(Pending { tmp: mtmp, dest: manifest_path.clone() });
    // Everything succeeded: move the outputs into place, manifest last.
    for p in pending {
        set_output_mode(p.tmp.as_file());
        p.tmp.persist(&p.dest).map_err(|e| Error::io(format!("renaming into {}", p.dest.display()), e))?;
    }
    if let Ok(d) = File::open(&opts.out_dir) {
        let _ = d.sync_all();
    }
    Ok(BuildResult { manifest_path, manifest, warnings: Vec::new() })
}

/// Outputs are world-readable regardless of the umask (0644), like a
/// build tool's artifacts should be.
fn set_output_mode(f: &File) {
    use std::os::unix::fs::PermissionsExt;
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
}

/// Build every tree the recipe names, in name order.
pub fn resolve_trees(loaded: &Loaded, spool_dir: &Path, progress: &Progress) -> Result<Trees, Error> {
    let recipe = &loaded.recipe;
    let mut trees = BTreeMap::new();
    let mut inputs = Vec::new();
    let mut pending_dirs = Vec::new();
    let mut oci = BTreeMap::new();
    for (name, layers) in &recipe.trees {
        let step = progress.step(format!("building tree `{name}`"));
        let mut tree = Tree::new(recipe.epoch());
        for (i, layer) in layers.iter().enumerate() {
            let at = format!("trees.{name}[{i}]");
            let wrap = |source: LayerError| Error::Layer { at: at.clone(), source };
            let host = |p: &str| loaded.base_dir.join(p);
            match layer {
                Layer::Dir(l) => {
                    crate::tree::dir::apply(&mut tree, l, &host(&l.dir)).map_err(wrap)?;
                }
                Layer::Tar(l) => {
                    inputs.push(Input::file(&at, "tar", &l.tar, &host(&l.tar)).map_err(wrap)?);
                    crate::tree::tar::apply_tar(&mut tree, &host(&l.tar), &l.to, spool_dir).map_err(wrap)?;
                }
                Layer::Deb(l) => {
                    // A locked package name brings its locked dependencies,
                    // unpacked first; a host .deb is just that file.
                    let debs = if crate::boot::packages::is_package_name(&l.deb) {
                        crate::boot::packages::Packages::open(&loaded.base_dir)
                            .and_then(|p| p.closure(&l.deb)?.into_iter().map(|n| Ok((p.deb(&n)?, n))).collect::<Result<Vec<_>, _>>())
                            .map_err(|e| wrap(LayerError::Invalid(e.to_string())))?
                    } else {
                        vec![(host(&l.deb), l.deb.clone())]
                    };
                    for (path, shown) in debs {
                        inputs.push(Input::file(&at, "deb", &shown, &path).map_err(wrap)?);
                        crate::tree::tar::apply_deb(&mut tree, &path, &l.to, spool_dir).map_err(wrap)?;
                    }
                }
                Layer::Oci(l) => {
                    inputs.push(Input::file(&at, "oci", &l.oci, &host(&l.oci)).map_err(wrap)?);
                    let config = crate::tree::oci::apply_oci(&mut tree, &host(&l.oci), &l.to, spool_dir).map_err(wrap)?;
                    oci.insert(name.clone(), config);
                }
                Layer::Debian(l) => {
                    let used = crate::debian::apply(&mut tree, l, loaded, spool_dir)
                        .map_err(|source| Error::Debian { at: at.clone(), source: Box::new(source) })?;
                    for (name, sha256) in used {
                        inputs.push(Input { layer: at.clone(), kind: "deb".into(), path: name, sha256 });
                    }
                }
                Layer::File(l) => {
                    if let Some(src) = &l.source {
                        inputs.push(Input::file(&at, "file", src, &host(src)).map_err(wrap)?);
                    }
                    crate::tree::inline::apply_file(&mut tree, l, &loaded.base_dir).map_err(wrap)?;
                }
                Layer::Mkdir(l) => crate::tree::inline::apply_mkdir(&mut tree, l).map_err(wrap)?,
                Layer::Symlink(l) => crate::tree::inline::apply_symlink(&mut tree, l).map_err(wrap)?,
                Layer::Remove(l) => {
                    tree.remove(l.remove.as_bytes()).map_err(|e| wrap(e.into()))?;
                }
            }
            if let Layer::Dir(l) = layer {
                pending_dirs.push((inputs.len(), tree.clone(), l.to.clone()));
                inputs.push(Input { layer: at.clone(), kind: "dir".into(), path: l.dir.clone(), sha256: String::new() });
            }
        }
        step.done();
        trees.insert(name.clone(), tree);
    }
    let oem = crate::oem::wanted(recipe).then(|| crate::oem::render(recipe));
    if let (Some(rendered), Some(i)) = (&oem, crate::oem::oem_partition(recipe)) {
        let p = &recipe.disk.as_ref().expect("has a partition").partitions[i];
        let mut t = p.tree.as_ref().map(|t| trees[t].clone()).unwrap_or_else(|| Tree::new(recipe.epoch()));
        rendered.add_to(&mut t, "/").map_err(|e| Error::Other(format!("disk.partitions[{i}] (OEM): {e}")))?;
        trees.insert(OEM_TREE.to_string(), t);
    }
    Ok(Trees { trees, inputs, pending_dirs, oci, oem })
}

/// Plan the disk; `auto` sizes are asked of the filesystem writers.
pub fn plan_for(loaded: &Loaded, trees: &Trees) -> Result<Plan, Error> {
    let mut plan = crate::plan::plan(&loaded.recipe, &loaded.digest, |i| auto_size(loaded, trees, i))?;
    if let Some(i) = crate::oem::oem_partition(&loaded.recipe).filter(|_| trees.trees.contains_key(OEM_TREE)) {
        plan.partitions[i].tree = Some(OEM_TREE.to_string());
    }
    Ok(plan)
}

/// The tree that goes into partition `i` (the OEM partition's includes the
/// rendered OEM files).
fn partition_tree<'a>(loaded: &Loaded, trees: &'a Trees, i: usize) -> Option<&'a Tree> {
    if crate::oem::oem_partition(&loaded.recipe) == Some(i) {
        if let Some(t) = trees.trees.get(OEM_TREE) {
            return Some(t);
        }
    }
    let p = &loaded.recipe.disk.as_ref()?.partitions[i];
    p.tree.as_ref().map(|t| &trees.trees[t])
}

/// The size a partition marked `"auto"` needs: its filesystem's minimum for
/// the tree, plus the recipe's headroom (default 20%).
fn auto_size(loaded: &Loaded, trees: &Trees, i: usize) -> Result<u64, Error> {
    let p = &loaded.recipe.disk.as_ref().expect("auto needs a disk").partitions[i];
    let empty = Tree::new(loaded.recipe.epoch());
    let tree = partition_tree(loaded, trees, i).unwrap_or(&empty);
    let (uuid, seed) = crate::plan::fs_identity(&loaded.digest, i, &p.label);
    let params = FsParams { label: p.fs.label.clone().unwrap_or_else(|| p.label.clone()), uuid, seed, epoch: loaded.recipe.epoch() };
    let at = format!("disk.partitions[{i}]");
    let min = match p.filesystem {
        Filesystem::Ext4 => {
            let o =
                crate::fs::ext4::Ext4Options::from_fs_options(&p.fs.writer_options()).map_err(|e| Error::Other(format!("{at}.fs: {e}")))?;
            crate::fs::ext4::min_size(tree, &params, &o)
        }
        Filesystem::Btrfs => {
            let o = crate::fs::btrfs::BtrfsOptions::from_fs_options(&p.fs.writer_options())
                .map_err(|e| Error::Other(format!("{at}.fs: {e}")))?;
            match crate::fs::btrfs::min_size(tree, &params, &o) {
                // 0 means the tree or options are invalid: let the writer
                // report the real error on a nominal size.
                0 => 1 << 30,
                n => n,
            }
        }
        other => return Err(Error::Other(format!("{at}.size: \"auto\" is not available for {other:?}: give a size"))),
    };
    let headroom = match &p.fs.headroom {
        Some(h) => crate::recipe::size::Headroom::parse(h).map_err(|e| Error::Other(format!("{at}.fs.headroom: {e}")))?,
        None => crate::recipe::size::DEFAULT_HEADROOM,
    };
    Ok(headroom.apply(min))
}

/// GRUB for BIOS boot: the core image (from the pinned `grub-pc-bin`,
/// read from the package itself) into the bios-boot partition and boot.img
/// into sector 0; GRUB then loads `/boot/vmlinuz` and `/boot/initrd.img`
/// from the ESP with the recipe's command line.
fn install_bios(
    file: &File,
    loaded: &Loaded,
    plan: &Plan,
    boot: &crate::boot::assemble::BootParts,
    spool: &Path,
) -> Result<crate::boot::grub::Installed, Error> {
    let packages = crate::boot::packages::Packages::open(&loaded.base_dir)
        .map_err(|e| Error::Other(format!("boot.firmware: \"bios\" needs GRUB: {e}")))?;
    let deb = packages.deb("grub-pc-bin").map_err(|e| Error::Other(format!("boot.firmware: \"bios\" needs GRUB: {e}")))?;
    let files =
        crate::boot::grub::GrubFiles::from_deb(&deb, spool).map_err(|e| Error::Partition { name: "GRUB".into(), source: e.into() })?;
    crate::boot::grub::install_for_plan(file, plan, &files, &boot.cmdline)
        .map_err(|e| Error::Partition { name: "GRUB BIOS install".into(), source: e.into() })
}

/// Write the GPT and every partition into `file`. `esp_files` are added to
/// the ESP's tree (the UKI, the kernel and initramfs for GRUB).
fn write_raw(
    file: &File,
    plan: &Plan,
    trees: &Trees,
    esp_files: &[(String, crate::tree::Content)],
    progress: &Progress,
) -> Result<(), Error> {
    file.set_len(plan.disk_size).map_err(|e| Error::io("sizing the image", e))?;
    let whole = Region::new(file, 0, plan.disk_size, "disk");
    crate::disk::gpt::write(whole, plan)?;
    let empty = Tree::new(plan.epoch);
    for p in &plan.partitions {
        let name = format!("partition {} ({})", p.number, p.label);
        let region = Region::new(file, p.offset, p.size, &name);
        let mut tree = p.tree.as_ref().map(|t| &trees.trees[t]).unwrap_or(&empty);
        let with_boot;
        if p.type_guid == crate::recipe::partition_type_guid("esp").expect("known") && !esp_files.is_empty() {
            let mut t = tree.clone();
            for (path, content) in esp_files {
                let inode =
                    crate::tree::Inode { meta: crate::tree::Meta::new(0o644, plan.epoch), kind: crate::tree::Kind::File(content.clone()) };
                t.insert(path.as_bytes(), inode).map_err(|e| Error::Other(format!("{name}: {e}")))?;
            }
            with_boot = t;
            tree = &with_boot;
        }
        let params = FsParams { label: p.fs_label.clone(), uuid: p.fs_uuid, seed: p.fs_seed, epoch: plan.epoch };
        let step = progress.step(format!("writing {name} as {:?}", p.filesystem));
        match p.filesystem {
            Filesystem::None => {
                // Nothing to write, but clear the start so that stale
                // signatures on a reused disk are not mistaken for a filesystem.
                region.zero(0, p.size.min(1 << 20))?;
            }
            Filesystem::Vfat => {
                crate::fs::fat::write(tree, region, &params).map_err(|e| match e {
                    crate::fs::fat::FatError::Full { .. } => Error::Other(format!(
                        "disk.partitions[{}].size: {name} is {} but its files need about {}: make it at least that large",
                        p.number - 1,
                        crate::recipe::size::human(p.size),
                        crate::recipe::size::human(crate::fs::fat::size_needed(tree))
                    )),
                    e => Error::Partition { name: name.clone(), source: e.into() },
                })?;
            }
            Filesystem::Ext4 => {
                let at = format!("disk.partitions[{}]", p.number - 1);
                let o = crate::fs::ext4::Ext4Options::from_fs_options(&p.fs.writer_options())
                    .map_err(|e| Error::Other(format!("{at}.fs: {e}")))?;
                crate::fs::ext4::write(tree, region, &params, &o).map_err(|e| match e {
                    e @ crate::fs::ext4::Ext4Error::TooSmall { .. } => Error::Other(format!("{at}.size: {e}")),
                    e => Error::Partition { name: name.clone(), source: e.into() },
                })?;
            }
            Filesystem::Btrfs => {
                let at = format!("disk.partitions[{}]", p.number - 1);
                let o = crate::fs::btrfs::BtrfsOptions::from_fs_options(&p.fs.writer_options())
                    .map_err(|e| Error::Other(format!("{at}.fs: {e}")))?;
                crate::fs::btrfs::write(tree, region, &params, &o).map_err(|e| match e {
                    e @ crate::fs::btrfs::BtrfsError::TooSmall { .. } => Error::Other(format!("{at}.size: {e}")),
                    e => Error::Partition { name: name.clone(), source: e.into() },
                })?;
            }
        }
        step.done();
    }
    Ok(())
}
