//! The build: recipe → trees → plan → regions of one sparse file → outputs →
//! manifest. Everything is written to temp files in the output folder and
//! renamed into place only when the whole build has succeeded, so a failed
//! build leaves no partial output and never clobbers the last good image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::disk::Region;
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
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

/// Resolved trees plus the digests of the inputs they came from.
pub struct Trees {
    pub trees: BTreeMap<String, Tree>,
    pub inputs: Vec<Input>,
}

/// A finished temp file waiting to be renamed to its final name.
struct Pending {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

/// Run a whole build.
pub fn build(recipe_path: &Path, opts: &BuildOptions) -> Result<BuildResult, Error> {
    let progress = Progress::new(opts.progress);
    let loaded = crate::recipe::load(recipe_path, opts.env_epoch)?;
    let recipe = &loaded.recipe;
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| Error::io(format!("creating the output folder {}", opts.out_dir.display()), e))?;
    let trees = resolve_trees(&loaded, &opts.out_dir, &progress)?;
    let plan = plan_for(&loaded, &trees)?;

    let mut pending = Vec::new();
    let mut artifacts = Vec::new();
    let wants_disk = recipe.outputs.iter().any(|o| matches!(o, Output::Raw | Output::Qcow2 | Output::Vhd | Output::Vmdk));
    if wants_disk {
        let tmp = temp_in(&opts.out_dir, &recipe.name)?;
        write_raw(tmp.as_file(), &plan, &trees, &progress)?;
        let raw = tmp.as_file();
        let dest = |ext: &str| opts.out_dir.join(format!("{}.{ext}", recipe.name));
        if recipe.outputs.contains(&Output::Qcow2) {
            let out = temp_in(&opts.out_dir, &recipe.name)?;
            let opts = recipe.qcow2.clone().unwrap_or_default();
            if opts.compress {
                let step = progress.step("converting to compressed qcow2".into());
                let level = opts.level.unwrap_or(6);
                crate::output::qcow2::write_compressed(raw, plan.disk_size, out.as_file(), level, crate::output::grains::threads())
                    .map_err(|e| Error::io("writing the compressed qcow2 image", e))?;
                step.done();
            } else {
                let step = progress.step("converting to qcow2".into());
                crate::output::qcow2::write(raw, plan.disk_size, out.as_file()).map_err(|e| Error::io("writing the qcow2 image", e))?;
                step.done();
            }
            pending.push(Pending { tmp: out, dest: dest("qcow2") });
        }
        if recipe.outputs.contains(&Output::Vhd) {
            let out = temp_in(&opts.out_dir, &recipe.name)?;
            let step = progress.step("converting to VHD".into());
            let id = *crate::plan::derive_uuid(&loaded.digest, "vhd-unique-id").as_bytes();
            crate::output::vhd::write(raw, plan.disk_size, out.as_file(), plan.epoch, id)
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
    if recipe.outputs.contains(&Output::Initramfs) {
        let init = recipe.initramfs.as_ref().expect("validated");
        let tree = &trees.trees[&init.tree];
        let dest = opts.out_dir.join(format!("{}.initramfs", recipe.name));
        let mut tmp = temp_in(&opts.out_dir, &recipe.name)?;
        let step = progress.step(format!("packing the initramfs from tree `{}`", init.tree));
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            crate::initramfs::write(tree, init.compression, init.level, &mut w)?;
            w.flush().map_err(|e| Error::io("writing the initramfs", e))?;
        }
        step.done();
        pending.push(Pending { tmp, dest });
    }
    let step = progress.step("hashing the outputs".to_string());
    for p in &pending {
        p.tmp.as_file().sync_all().map_err(|e| Error::io(format!("syncing {}", p.dest.display()), e))?;
        artifacts.push(Artifact::of(p.tmp.as_file(), &p.dest)?);
    }
    step.done();
    let manifest = Manifest::new(&loaded, &plan, artifacts, trees.inputs.clone());
    let manifest_path = opts.out_dir.join(format!("{}.manifest.json", recipe.name));
    let mut mtmp = temp_in(&opts.out_dir, &recipe.name)?;
    mtmp.write_all(manifest.to_json().as_bytes()).map_err(|e| Error::io("writing the manifest", e))?;
    mtmp.as_file().sync_all().map_err(|e| Error::io("syncing the manifest", e))?;
    pending.push(Pending { tmp: mtmp, dest: manifest_path.clone() });
    // Everything succeeded: move the outputs into place, manifest last.
    for p in pending {
        set_output_mode(p.tmp.as_file());
        p.tmp.persist(&p.dest).map_err(|e| Error::io(format!("renaming into {}", p.dest.display()), e.error))?;
    }
    if let Ok(d) = File::open(&opts.out_dir) {
        let _ = d.sync_all();
    }
    Ok(BuildResult { manifest_path, manifest })
}

fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile, Error> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))
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
                    inputs.push(Input::file(&at, "deb", &l.deb, &host(&l.deb)).map_err(wrap)?);
                    crate::tree::tar::apply_deb(&mut tree, &host(&l.deb), &l.to, spool_dir).map_err(wrap)?;
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
                inputs.push(Input::dir(&at, &l.dir, &tree, &l.to).map_err(wrap)?);
            }
        }
        step.done();
        trees.insert(name.clone(), tree);
    }
    Ok(Trees { trees, inputs })
}

/// Plan the disk; `auto` sizes are asked of the filesystem writers.
pub fn plan_for(loaded: &Loaded, trees: &Trees) -> Result<Plan, Error> {
    crate::plan::plan(&loaded.recipe, &loaded.digest, |i| auto_size(loaded, trees, i))
}

/// The size a partition marked `"auto"` needs: its filesystem's minimum for
/// the tree, plus the recipe's headroom.
fn auto_size(loaded: &Loaded, _trees: &Trees, i: usize) -> Result<u64, Error> {
    let p = &loaded.recipe.disk.as_ref().expect("auto needs a disk").partitions[i];
    Err(Error::Other(format!(
        "disk.partitions[{i}].size: \"auto\" is not available for filesystem {:?} (partition `{}`): give a size",
        p.filesystem, p.label
    )))
}

/// Write the GPT and every partition into `file`.
fn write_raw(file: &File, plan: &Plan, trees: &Trees, progress: &Progress) -> Result<(), Error> {
    file.set_len(plan.disk_size).map_err(|e| Error::io("sizing the image", e))?;
    let whole = Region::new(file, 0, plan.disk_size, "disk");
    crate::disk::gpt::write(whole, plan)?;
    let empty = Tree::new(plan.epoch);
    for p in &plan.partitions {
        let name = format!("partition {} ({})", p.number, p.label);
        let region = Region::new(file, p.offset, p.size, &name);
        let tree = p.tree.as_ref().map(|t| &trees.trees[t]).unwrap_or(&empty);
        let params = FsParams { label: p.fs_label.clone(), uuid: p.fs_uuid, seed: p.fs_seed, epoch: plan.epoch };
        let step = progress.step(format!("writing {name} as {:?}", p.filesystem));
        match p.filesystem {
            Filesystem::None => {
                // Nothing to write, but clear the start so that stale
                // signatures on a reused disk are not mistaken for a filesystem.
                region.zero(0, p.size.min(1 << 20))?;
            }
            Filesystem::Vfat => {
                crate::fs::fat::write(tree, region, &params).map_err(|e| Error::Partition { name: name.clone(), source: e.into() })?;
            }
            other => {
                return Err(Error::Other(format!("{name}: filesystem {other:?} is not available in this build")));
            }
        }
        step.done();
    }
    Ok(())
}

/// sha256 of a whole file, streamed.
pub fn sha256_file(f: &File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < len {
        let n = buf.len().min((len - off) as usize);
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}
