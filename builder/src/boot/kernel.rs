//! The kernel and its modules, from a Debian kernel package or a bare image.
//!
//! Module dependencies come from each module's own `.modinfo` ELF section
//! (`depends=`), not from depmod: the Debian package ships no modules.dep.
//! Modules listed in `modules.builtin` are part of the kernel and need
//! nothing. The order we return loads every dependency before its users.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::tree::{Content, Kind, Tree};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{package}: no kernel image (/boot/vmlinuz-*) in the package or the packages it depends on")]
    NoImage { package: String },
    #[error("kernel.modules[{index}]: module `{name}` is not in {package} (neither as a .ko nor built in): check the name with `modinfo -k {release} {name}`")]
    NoModule { index: usize, name: String, package: String, release: String },
    #[error("{at}: the {role} needs `{module}`, which {package} has neither as a module nor built in: use another `filesystem` or a kernel package that has it")]
    NoFilesystem { at: String, role: &'static str, module: String, package: String },
    #[error("module `{module}` depends on `{dep}`, which {package} does not have")]
    MissingDependency { module: String, dep: String, package: String },
    #[error("module {path}: {msg}")]
    BadModule { path: String, msg: String },
    #[error("reading the kernel: {0}")]
    Read(String),
    #[error("kernel.cmdline is {len} bytes; this kernel accepts at most {max}: shorten it")]
    CmdlineTooLong { len: usize, max: usize },
}

/// A module chosen for the initramfs.
#[derive(Debug, Clone)]
pub struct Module {
    /// Module name (`virtio_blk`).
    pub name: String,
    /// Path relative to `/lib/modules/RELEASE/` (`kernel/drivers/block/virtio_blk.ko`).
    pub rel_path: String,
    pub content: Content,
}

/// A kernel image and, when it came from a package, its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// What the kernel came from, for messages and the manifest.
    pub origin: String,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64` (empty for a bare image).
    pub release: String,
    pub image: Content,
    /// Normalised module name → (path relative to /lib/modules/RELEASE, content).
    modules: BTreeMap<String, (String, Content)>,
    builtin: BTreeSet<String>,
}

/// `-` and `_` are the same in module names.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

impl Kernel {
    /// Load from the trees of one or more unpacked kernel packages (a meta
    /// package and the versioned package it depends on).
    pub fn from_trees(origin: &str, trees: &[Tree]) -> Result<Kernel, KernelError> {
        for tree in trees {
            let Some(boot) = tree.find(b"/boot") else { continue };
            let Kind::Dir(entries) = &tree.inode(boot).kind else { continue };
            for (name, &id) in entries {
                let Some(release) = name.strip_prefix(b"vmlinuz-") else { continue };
                let Kind::File(image) = &tree.inode(id).kind else { continue };
                let release = String::from_utf8_lossy(release).into_owned();
                let mut k = Kernel {
                    origin: origin.into(),
                    release: release.clone(),
                    image: image.clone(),
                    modules: BTreeMap::new(),
                    builtin: BTreeSet::new(),
                };
                let base = format!("/lib/modules/{release}");
                if let Some(dir) = tree.find(base.as_bytes()) {
                    let mut found = Vec::new();
                    collect(tree, dir, &mut String::new(), &mut found);
                    for (rel, content) in found {
                        if let Some(stem) = rel.rsplit('/').next().and_then(|f| f.strip_suffix(".ko")) {
                            k.modules.insert(normalise(stem), (rel.clone(), content));
                        }
                    }
                }
                if let Some(id) = tree.find(format!("{base}/modules.builtin").as_bytes()) {
                    if let Kind::File(c) = &tree.inode(id).kind {
                        let mut buf = vec![0u8; c.len() as usize];
                        c.open().and_then(|r| r.read_exact_at(&mut buf, 0)).map_err(|e| KernelError::Read(e.to_string()))?;
                        for line in String::from_utf8_lossy(&buf).lines() {
                            if let Some(stem) = line.rsplit('/').next().and_then(|f| f.strip_suffix(".ko")) {
                                k.builtin.insert(normalise(stem));
                            }
                        }
                    }
                }
                return Ok(k);
            }
        }
        Err(KernelError::NoImage { package: origin.into() })
    }

    /// A bare kernel image from the host (no modules available).
    pub fn from_image(path: &Path) -> Result<Kernel, KernelError> {
        let image = Content::host(path).map_err(|e| KernelError::Read(format!("{}: {e}", path.display())))?;
        Ok(Kernel { origin: path.display().to_string(), release: String::new(), image, modules: BTreeMap::new(), builtin: BTreeSet::new() })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalise(name))
    }

    /// Whether the package has `name` as a loadable module.
    pub fn has_module(&self, name: &str) -> bool {
        self.modules.contains_key(&normalise(name))
    }

    /// Whether the kernel came with a module tree (a package; a bare image
    /// has none, and nothing is known about what it has built in).
    pub fn has_module_tree(&self) -> bool {
        !self.modules.is_empty() || !self.builtin.is_empty()
    }

    /// The direct dependencies of a loadable module (`.modinfo`
    /// `depends=`), normalised; none for a built-in or unknown name.
    pub fn direct_depends(&self, name: &str) -> Result<Vec<String>, KernelError> {
        match self.modules.get(&normalise(name)) {
            Some((rel, content)) => Ok(depends(rel, content)?.iter().map(|d| normalise(d)).collect()),
            None => Ok(Vec::new()),
        }
    }

    /// The modules `wanted` names plus all their dependencies, each once,
    /// dependencies first. Built-in modules are skipped.
    pub fn module_order(&self, wanted: &[String]) -> Result<Vec<Module>, KernelError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for (index, name) in wanted.iter().enumerate() {
            let n = normalise(name);
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.modules.contains_key(&n) {
                return Err(KernelError::NoModule {
                    index,
                    name: name.clone(),
                    package: self.origin.clone(),
                    release: self.release.clone(),
                });
            }
            self.visit(&n, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        n: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), KernelError> {
        if done.contains(n) || self.builtin.contains(n) || !stack.insert(n.to_string()) {
            return Ok(());
        }
        let (rel, content) = &self.modules[n];
        for dep in depends(rel, content)? {
            let d = normalise(&dep);
            if !self.modules.contains_key(&d) && !self.builtin.contains(&d) {
                return Err(KernelError::MissingDependency { module: n.into(), dep, package: self.origin.clone() });
            }
            self.visit(&d, done, stack, order)?;
        }
        stack.remove(n);
        done.insert(n.to_string());
        order.push(Module { name: n.to_string(), rel_path: rel.clone(), content: content.clone() });
        Ok(())
    }

    /// The longest command line this kernel accepts (from its boot header;
    /// 2048 bytes including the NUL for older headers, as x86 defines).
    pub fn cmdline_max(&self) -> Result<usize, KernelError> {
        let r = self.image.open().map_err(|e| KernelError::Read(e.to_string()))?;
        let mut h = [0u8; 0x240];
        r.read_exact_at(&mut h, 0).map_err(|e| KernelError::Read(e.to_string()))?;
        let version = u16::from_le_bytes([h[0x206], h[0x207]]);
        if &h[0x202..0x206] == b"HdrS" && version >= 0x0206 {
            Ok(u32::from_le_bytes(h[0x238..0x23c].try_into().expect("4 bytes")) as usize)
        } else {
            Ok(2047)
        }
    }

    pub fn check_cmdline(&self, cmdline: &str) -> Result<(), KernelError> {
        let max = self.cmdline_max()?;
        if cmdline.len() > max {
            return Err(KernelError::CmdlineTooLong { len: cmdline.len(), max });
        }
        Ok(())
    }
}

fn collect(tree: &Tree, dir: usize, prefix: &mut String, out: &mut Vec<(String, Content)>) {
    let Kind::Dir(entries) = &tree.inode(dir).kind else { return };
    for (name, &id) in entries {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(&String::from_utf8_lossy(name));
        match &tree.inode(id).kind {
            Kind::Dir(_) => collect(tree, id, prefix, out),
            Kind::File(c) if prefix.ends_with(".ko") => out.push((prefix.clone(), c.clone())),
            _ => {}
        }
        prefix.truncate(len);
    }
}

/// `depends=` of a module, from its `.modinfo` section.
pub fn depends(rel: &str, content: &Content) -> Result<Vec<String>, KernelError> {
    use object::{Object, ObjectSection};
    let bad = |msg: String| KernelError::BadModule { path: rel.into(), msg };
    let mut data = vec![0u8; content.len() as usize];
    content.open().and_then(|r| r.read_exact_at(&mut data, 0)).map_err(|e| bad(e.to_string()))?;
    let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF module: {e}")))?;
    let sec = file.section_by_name(".modinfo").ok_or_else(|| bad("no .modinfo section".into()))?;
    let info = sec.data().map_err(|e| bad(e.to_string()))?;
    for field in info.split(|b| *b == 0) {
        if let Some(v) = field.strip_prefix(b"depends=") {
            return Ok(String::from_utf8_lossy(v).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect());
        }
    }
    Ok(Vec::new())
}

/// Host paths of the `.deb`s making up a kernel package name: the package
/// itself plus its locked dependencies.
pub fn package_debs(packages: &crate::boot::packages::Packages, name: &str) -> Result<Vec<PathBuf>, crate::boot::packages::PackageError> {
    let entry = packages.entry(name)?.clone();
    let mut v = vec![packages.deb(name)?];
    for d in &entry.depends {
        v.push(packages.deb(d)?);
    }
    Ok(v)
}
