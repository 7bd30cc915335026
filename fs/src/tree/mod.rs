//! The in-memory file tree that every filesystem writer consumes.
//!
//! A [`Tree`] is a set of inodes addressed by [`InodeId`]; directories map
//! names (raw bytes, kept sorted) to inode ids, so hardlinks are simply two
//! directory entries naming the same inode. File content is a [`Content`]
//! *reference*: a host file, a slice of an archive, or a small byte buffer. No
//! writer ever needs the content of a large file in memory.
//!
//! The builder's layers (`dir`, `tar`, `deb`, `oci`, inline
//! `file`/`mkdir`/`symlink`/`remove`, in `build_image::tree`) fill a tree
//! through the public editing API here only, which refuses names that would
//! escape the tree.

pub mod content;

use std::collections::BTreeMap;

pub use content::Content;

/// Index of an inode inside its [`Tree`].
pub type InodeId = usize;

/// Errors raised while building or editing a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: a path component is not a directory ({component})")]
    NotADirectory { path: String, component: String },
    #[error("{path}: refusing a path that escapes the tree (`..` or an absolute symlink leading out)")]
    Escape { path: String },
    #[error("{path}: the name is empty or contains a NUL byte")]
    BadName { path: String },
    #[error("{path}: hardlink target `{target}` does not exist in the tree")]
    MissingLinkTarget { path: String, target: String },
    #[error("{path}: too many levels of symbolic links while resolving the path")]
    SymlinkLoop { path: String },
    #[error("{path}: cannot replace the root directory")]
    Root { path: String },
}

/// The kind of an inode, with the data that belongs to that kind.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A directory: names to inode ids, sorted bytewise.
    Dir(BTreeMap<Vec<u8>, InodeId>),
    /// A regular file.
    File(Content),
    /// A symbolic link and its target, as raw bytes.
    Symlink(Vec<u8>),
    /// A character device with its major and minor numbers.
    CharDev { major: u32, minor: u32 },
    /// A block device with its major and minor numbers.
    BlockDev { major: u32, minor: u32 },
    /// A named pipe.
    Fifo,
    /// A unix socket (kept only for completeness; rarely useful in images).
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits for this kind.
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir(_) => libc::S_IFDIR,
            Kind::File(_) => libc::S_IFREG,
            Kind::Symlink(_) => libc::S_IFLNK,
            Kind::CharDev { .. } => libc::S_IFCHR,
            Kind::BlockDev { .. } => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    /// A short word for messages.
    pub fn word(&self) -> &'static str {
        match self {
            Kind::Dir(_) => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev { .. } => "character device",
            Kind::BlockDev { .. } => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// Normalised metadata of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in seconds since the epoch, already clamped to the
    /// recipe's `source_date_epoch`.
    pub mtime: i64,
    /// Nanoseconds of the modification time (0 when clamped).
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    /// Metadata for an entry the builder creates itself.
    pub fn new(mode: u32, mtime: i64) -> Meta {
        Meta { mode: mode & 0o7777, uid: 0, gid: 0, mtime, mtime_nsec: 0, xattrs: BTreeMap::new() }
    }
}

/// One inode: its metadata and what it is.
#[derive(Debug, Clone)]
pub struct Inode {
    pub meta: Meta,
    pub kind: Kind,
}

impl Inode {
    /// `st_mode`: type bits plus permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.meta.mode & 0o7777)
    }
}

/// An in-memory file tree. Inode 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    inodes: Vec<Inode>,
    /// `source_date_epoch`: every mtime is clamped to it, and new entries get it.
    epoch: i64,
}

/// A visited entry, yielded by [`Tree::walk`].
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// Path from the root, without a leading slash; empty for the root.
    pub path: &'a [u8],
    /// The entry's name within its parent (empty for the root).
    pub name: &'a [u8],
    pub ino: InodeId,
    pub parent: InodeId,
    pub depth: usize,
}

/// Why a path in the tree is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// `..` climbs above the root.
    Escape,
    /// A component contains a NUL byte.
    Nul,
}

/// Split a path in the tree (a layer's `file`, `to`, …, an archive entry)
/// into normalised components, refusing `..` that climbs above the root
/// and NUL bytes. `.` and empty components are dropped. The rule that
/// validation checks a recipe's paths with and `Tree` walks paths with.
pub fn path_components(path: &[u8]) -> Result<Vec<&[u8]>, BadPath> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(BadPath::Escape);
                }
            }
            c if c.contains(&0) => return Err(BadPath::Nul),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// [`path_components`] with the refusal as a [`TreeError`].
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    path_components(path).map_err(|e| match e {
        BadPath::Escape => TreeError::Escape { path: show(path) },
        BadPath::Nul => TreeError::BadName { path: show(path) },
    })
}

/// A lossless-enough rendering of a raw path for messages.
pub fn show(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

impl Tree {
    /// An empty tree: a root directory with mode 0755 owned by root.
    pub fn new(epoch: i64) -> Tree {
        Tree { inodes: vec![Inode { meta: Meta::new(0o755, epoch), kind: Kind::Dir(BTreeMap::new()) }], epoch }
    }

    /// The `source_date_epoch` this tree clamps to.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub const ROOT: InodeId = 0;

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    pub fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id]
    }

    /// Clamp a timestamp to the epoch, returning (seconds, nanoseconds).
    pub fn clamp_time(&self, secs: i64, nsec: u32) -> (i64, u32) {
        if secs >= self.epoch {
            (self.epoch, 0)
        } else {
            (secs, nsec)
        }
    }

    /// Add a detached inode (not yet linked into any directory).
    pub fn add_inode(&mut self, mut inode: Inode) -> InodeId {
        let (t, n) = self.clamp_time(inode.meta.mtime, inode.meta.mtime_nsec);
        inode.meta.mtime = t;
        inode.meta.mtime_nsec = n;
        inode.meta.mode &= 0o7777;
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Look up a path without following a final symlink. Intermediate
    /// symlinks are followed inside the tree as [`Tree::insert`] follows
    /// them. (`&mut` only because the walker is shared with insertion; a
    /// lookup never changes the tree.)
    pub fn lookup(&mut self, path: &[u8]) -> Result<Option<InodeId>, TreeError> {
        let comps = components(path)?;
        let Some((&last, parents)) = comps.split_last() else { return Ok(Some(Self::ROOT)) };
        let mut stack = vec![Self::ROOT];
        if !self.walk_dirs(path, &mut stack, parents, false, 0)? {
            return Ok(None);
        }
        Ok(self.child(*stack.last().expect("stack never empty"), last))
    }

    /// Find a path by plain descent, following no symlinks.
    pub fn find(&self, path: &[u8]) -> Option<InodeId> {
        let mut id = Self::ROOT;
        for c in components(path).ok()? {
            id = self.child(id, c)?;
        }
        Some(id)
    }

    /// The child `name` of directory `dir`, if any.
    pub fn child(&self, dir: InodeId, name: &[u8]) -> Option<InodeId> {
        match &self.inodes[dir].kind {
            Kind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// Link `inode` at `path`, creating missing parent directories (mode
    /// 0755, root-owned, mtime = epoch) as `mkdir -p` would.
    ///
    /// Intermediate symlinks are followed when they are relative and stay
    /// inside the tree (Debian's merged-/usr `bin -> usr/bin` works); an
    /// absolute symlink or a `..` that climbs above the root is refused, so an
    /// archive can never place a file outside the tree it builds.
    ///
    /// When an entry exists at `path`: a directory placed over a directory
    /// keeps the old children and takes the new metadata (how `tar x` and
    /// `cp -a` overlay); anything else replaces the old entry.
    pub fn insert(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, TreeError> {
        let comps = components(path)?;
        let Some((&last, parents)) = comps.split_last() else {
            // The root itself: only directory metadata may change.
            return match inode.kind {
                Kind::Dir(_) => {
                    let id = self.add_inode(inode);
                    let meta = self.inodes[id].meta.clone();
                    self.inodes.pop();
                    self.inodes[Self::ROOT].meta = meta;
                    Ok(Self::ROOT)
                }
                _ => Err(TreeError::Root { path: show(path) }),
            };
        };
        let dir = self.mkdir_p(path, parents)?;
        if let (Some(old), Kind::Dir(_)) = (self.child(dir, last), &inode.kind) {
            if matches!(self.inodes[old].kind, Kind::Dir(_)) {
                let id = self.add_inode(inode);
                let meta = self.inodes[id].meta.clone();
                self.inodes.pop();
                self.inodes[old].meta = meta;
                return Ok(old);
            }
        }
        let id = self.add_inode(inode);
        self.set_child(dir, last, id);
        Ok(id)
    }

    /// Make a hardlink: `path` names the same inode as `target`.
    pub fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<InodeId, TreeError> {
        let Some(id) = self.lookup(target)? else {
            return Err(TreeError::MissingLinkTarget { path: show(path), target: show(target) });
        };
        if matches!(self.inodes[id].kind, Kind::Dir(_)) {
            return Err(TreeError::MissingLinkTarget { path: show(path), target: show(target) });
        }
        let comps = components(path)?;
        let Some((&last, parents)) = comps.split_last() else { return Err(TreeError::Root { path: show(path) }) };
        let dir = self.mkdir_p(path, parents)?;
        self.set_child(dir, last, id);
        Ok(id)
    }

    /// Remove `path` and everything below it. Returns whether it existed.
    pub fn remove(&mut self, path: &[u8]) -> Result<bool, TreeError> {
        let comps = components(path)?;
        let Some((&last, parents)) = comps.split_last() else { return Err(TreeError::Root { path: show(path) }) };
        let mut stack = vec![Self::ROOT];
        if !self.walk_dirs(path, &mut stack, parents, false, 0)? {
            return Ok(false);
        }
        let dir = *stack.last().expect("stack never empty");
        match &mut self.inodes[dir].kind {
            Kind::Dir(children) => Ok(children.remove(last).is_some()),
            _ => Ok(false),
        }
    }

    /// Empty the directory at `path` (following in-tree symlinks to it),
    /// keeping the directory itself. Returns whether it existed.
    pub fn clear_dir(&mut self, path: &[u8]) -> Result<bool, TreeError> {
        let comps = components(path)?;
        let mut stack = vec![Self::ROOT];
        if !self.walk_dirs(path, &mut stack, &comps, false, 0)? {
            return Ok(false);
        }
        let dir = *stack.last().expect("stack never empty");
        match &mut self.inodes[dir].kind {
            Kind::Dir(children) => {
                children.clear();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Create (as needed) and return the directory that `parents` names.
    pub fn mkdir_p(&mut self, full: &[u8], parents: &[&[u8]]) -> Result<InodeId, TreeError> {
        let mut stack = vec![Self::ROOT];
        self.walk_dirs(full, &mut stack, parents, true, 0)?;
        Ok(*stack.last().expect("stack never empty"))
    }

    fn set_child(&mut self, dir: InodeId, name: &[u8], id: InodeId) {
        if let Kind::Dir(children) = &mut self.inodes[dir].kind {
            children.insert(name.to_vec(), id);
        }
    }

    /// Walk `comps` as directories from the top of `stack`, following
    /// relative symlinks inside the tree. Returns false when a component is
    /// missing and `create` is off.
    fn walk_dirs(&mut self, full: &[u8], stack: &mut Vec<InodeId>, comps: &[&[u8]], create: bool, depth: usize) -> Result<bool, TreeError> {
        if depth > 40 {
            return Err(TreeError::SymlinkLoop { path: show(full) });
        }
        for &c in comps {
            match c {
                b"." => continue,
                b".." => {
                    if stack.len() == 1 {
                        return Err(TreeError::Escape { path: show(full) });
                    }
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let dir = *stack.last().expect("stack never empty");
            let next = match self.child(dir, c) {
                Some(id) => id,
                None if create => {
                    let id = self.add_inode(Inode { meta: Meta::new(0o755, self.epoch), kind: Kind::Dir(BTreeMap::new()) });
                    self.set_child(dir, c, id);
                    id
                }
                None => return Ok(false),
            };
            match &self.inodes[next].kind {
                Kind::Dir(_) => stack.push(next),
                Kind::Symlink(target) => {
                    if target.first() == Some(&b'/') {
                        return Err(TreeError::Escape { path: show(full) });
                    }
                    let target = target.clone();
                    let tcomps: Vec<&[u8]> = target.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
                    if !self.walk_dirs(full, stack, &tcomps, create, depth + 1)? {
                        return Ok(false);
                    }
                }
                _ => return Err(TreeError::NotADirectory { path: show(full), component: String::from_utf8_lossy(c).into_owned() }),
            }
        }
        Ok(true)
    }

    /// Visit every reachable entry depth-first, parents before children,
    /// children in name order. Hardlinked inodes are visited once per name.
    pub fn walk(&self, mut f: impl FnMut(Visit<'_>)) {
        let mut path = Vec::new();
        f(Visit { path: &path, name: b"", ino: Self::ROOT, parent: Self::ROOT, depth: 0 });
        self.walk_dir(Self::ROOT, &mut path, 1, &mut f);
    }

    /// [`Tree::walk`] with a visitor that can fail: no entry is visited
    /// after the first error, which is returned.
    pub fn try_walk<E>(&self, mut f: impl FnMut(Visit<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut failed = None;
        self.walk(|v| {
            if failed.is_none() {
                if let Err(e) = f(v) {
                    failed = Some(e);
                }
            }
        });
        failed.map_or(Ok(()), Err)
    }

    fn walk_dir(&self, dir: InodeId, path: &mut Vec<u8>, depth: usize, f: &mut impl FnMut(Visit<'_>)) {
        let Kind::Dir(children) = &self.inodes[dir].kind else { return };
        for (name, &id) in children {
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            f(Visit { path, name: &path[path.len() - name.len()..], ino: id, parent: dir, depth });
            if matches!(self.inodes[id].kind, Kind::Dir(_)) {
                self.walk_dir(id, path, depth + 1, f);
            }
            path.truncate(len);
        }
    }

    /// Link counts of every reachable inode, indexed by [`InodeId`]
    /// (0 for unreachable ones). Directories count `.`, `..` of each
    /// subdirectory, and their entry in the parent, as on disk.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut n = vec![0u32; self.inodes.len()];
        n[Self::ROOT] = 2;
        self.walk(|v| {
            if v.depth == 0 {
                return;
            }
            if matches!(self.inodes[v.ino].kind, Kind::Dir(_)) {
                n[v.ino] += 2;
                n[v.parent] += 1;
            } else {
                n[v.ino] += 1;
            }
        });
        n
    }

    /// Number of inodes reachable from the root (each hardlinked inode once).
    pub fn reachable_inodes(&self) -> usize {
        self.link_counts().iter().filter(|&&c| c > 0).count()
    }

    /// Apply a uid/gid to every inode (the `owner: root` normalisation).
    pub fn chown_all(&mut self, uid: u32, gid: u32) {
        for i in &mut self.inodes {
            i.meta.uid = uid;
            i.meta.gid = gid;
        }
    }

    /// Sum of the apparent sizes of all reachable regular files and symlinks.
    pub fn content_bytes(&self) -> u64 {
        let counts = self.link_counts();
        self.inodes
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(i, _)| match &i.kind {
                Kind::File(c) => c.len(),
                Kind::Symlink(t) => t.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

/// A tree path from a user-facing string (`/etc/hostname`).
pub fn tree_path(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl Tree {
    /// Name an existing inode at `path` (a hardlink by inode id).
    pub fn link_inode(&mut self, path: &[u8], id: InodeId) -> Result<(), TreeError> {
        let comps = components(path)?;
        let Some((&last, parents)) = comps.split_last() else { return Err(TreeError::Root { path: show(path) }) };
        let dir = self.mkdir_p(path, parents)?;
        self.set_child(dir, last, id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tree: &mut Tree, p: &str, data: &[u8]) -> InodeId {
        tree.insert(p.as_bytes(), Inode { meta: Meta::new(0o644, 0), kind: Kind::File(Content::bytes(data)) }).unwrap()
    }

    #[test]
    fn paths_normalise_and_may_not_climb_above_the_root() {
        assert_eq!(path_components(b"/a/./b//c/../d/").unwrap(), [&b"a"[..], b"b", b"d"]);
        assert_eq!(path_components(b"/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(path_components(b"/a/../../x"), Err(BadPath::Escape));
        assert_eq!(path_components(b"/a\0b"), Err(BadPath::Nul));
    }

    #[test]
    fn insert_makes_parents_and_keeps_names_sorted() {
        let mut t = Tree::new(100);
        file(&mut t, "/b/z", b"1");
        file(&mut t, "/b/a", b"2");
        file(&mut t, "/a", b"3");
        let mut seen = Vec::new();
        t.walk(|v| seen.push(String::from_utf8(v.path.to_vec()).unwrap()));
        assert_eq!(seen, ["", "a", "b", "b/a", "b/z"]);
        assert_eq!(t.inode(t.find(b"/b").unwrap()).meta.mtime, 100);
    }

    #[test]
    fn times_are_clamped_to_the_epoch() {
        let mut t = Tree::new(100);
        let id = t.add_inode(Inode { meta: Meta { mtime: 5000, mtime_nsec: 7, ..Meta::new(0o644, 0) }, kind: Kind::Fifo });
        assert_eq!((t.inode(id).meta.mtime, t.inode(id).meta.mtime_nsec), (100, 0));
        let id = t.add_inode(Inode { meta: Meta { mtime: 50, mtime_nsec: 7, ..Meta::new(0o644, 0) }, kind: Kind::Fifo });
        assert_eq!((t.inode(id).meta.mtime, t.inode(id).meta.mtime_nsec), (50, 7));
    }

    #[test]
    fn hardlinks_share_an_inode_and_count_links() {
        let mut t = Tree::new(0);
        let a = file(&mut t, "/a", b"x");
        t.hardlink(b"/dir/b", b"/a").unwrap();
        assert_eq!(t.find(b"/dir/b"), Some(a));
        let n = t.link_counts();
        assert_eq!(n[a], 2);
        assert_eq!(n[Tree::ROOT], 3); // ., .., and dir's ..
        assert!(t.hardlink(b"/c", b"/missing").is_err());
    }

    #[test]
    fn relative_symlinks_are_followed_inside_the_tree() {
        let mut t = Tree::new(0);
        t.insert(b"/usr/bin", Inode { meta: Meta::new(0o755, 0), kind: Kind::Dir(BTreeMap::new()) }).unwrap();
        t.insert(b"/bin", Inode { meta: Meta::new(0o777, 0), kind: Kind::Symlink(b"usr/bin".to_vec()) }).unwrap();
        let id = file(&mut t, "/bin/sh", b"#!");
        assert_eq!(t.find(b"/usr/bin/sh"), Some(id));
    }

    #[test]
    fn escapes_are_refused() {
        let mut t = Tree::new(0);
        assert!(matches!(components(b"../x"), Err(TreeError::Escape { .. })));
        assert!(matches!(components(b"a/../../x"), Err(TreeError::Escape { .. })));
        t.insert(b"/evil", Inode { meta: Meta::new(0o777, 0), kind: Kind::Symlink(b"/etc".to_vec()) }).unwrap();
        let e = t.insert(b"/evil/passwd", Inode { meta: Meta::new(0o644, 0), kind: Kind::File(Content::bytes(*b"x")) });
        assert!(matches!(e, Err(TreeError::Escape { .. })), "{e:?}");
        t.insert(b"/up", Inode { meta: Meta::new(0o777, 0), kind: Kind::Symlink(b"../..".to_vec()) }).unwrap();
        let e = t.insert(b"/up/x", Inode { meta: Meta::new(0o644, 0), kind: Kind::File(Content::bytes(*b"x")) });
        assert!(matches!(e, Err(TreeError::Escape { .. })), "{e:?}");
    }

    #[test]
    fn a_dir_over_a_dir_keeps_children_and_takes_metadata() {
        let mut t = Tree::new(0);
        file(&mut t, "/etc/a", b"1");
        t.insert(b"/etc", Inode { meta: Meta::new(0o700, 0), kind: Kind::Dir(BTreeMap::new()) }).unwrap();
        assert!(t.find(b"/etc/a").is_some());
        assert_eq!(t.inode(t.find(b"/etc").unwrap()).meta.mode, 0o700);
        assert!(t.remove(b"/etc").unwrap());
        assert!(t.find(b"/etc/a").is_none());
    }
}
