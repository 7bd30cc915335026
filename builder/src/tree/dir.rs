//! `dir` layers: copy a host directory into the tree, exactly: modes with the
//! special bits, owners (or root), symlinks, hardlinks, device numbers, fifos,
//! xattrs and holes. File content stays on the host; only its path is kept.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{components, Content, Inode, InodeId, Kind, LayerError, Meta, Tree};
use crate::recipe::layer::{DirLayer, Owner};

/// Apply a `dir` layer; `host` is the resolved host directory.
pub fn apply(tree: &mut Tree, l: &DirLayer, host: &Path) -> Result<(), LayerError> {
    let meta = fs::metadata(host).map_err(|e| LayerError::host(host, "reading the `dir`", e))?;
    if !meta.is_dir() {
        return Err(LayerError::Invalid(format!("`dir` {} is not a directory", host.display())));
    }
    let mut to: Vec<u8> = Vec::new();
    for c in components(l.to.as_bytes())? {
        to.push(b'/');
        to.extend_from_slice(c);
    }
    let mut links: HashMap<(u64, u64), InodeId> = HashMap::new();
    // The directory itself becomes `to` (metadata only; existing children stay).
    let root = inode_for(tree, host, &meta, l.owner)?;
    tree.insert(&to, root)?;
    copy_dir(tree, host, &mut to, l.owner, &mut links)
}

fn copy_dir(
    tree: &mut Tree,
    dir: &Path,
    at: &mut Vec<u8>,
    owner: Owner,
    links: &mut HashMap<(u64, u64), InodeId>,
) -> Result<(), LayerError> {
    let rd = fs::read_dir(dir).map_err(|e| LayerError::host(dir, "listing", e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| LayerError::host(dir, "listing", e))?;
        names.push(e.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let md = fs::symlink_metadata(&path).map_err(|e| LayerError::host(&path, "reading", e))?;
        let len = at.len();
        at.push(b'/');
        at.extend_from_slice(name.as_bytes());
        let key = (md.dev(), md.ino());
        if !md.is_dir() && md.nlink() > 1 {
            if let Some(&id) = links.get(&key) {
                tree.link_inode(at, id)?;
                at.truncate(len);
                continue;
            }
        }
        let inode = inode_for(tree, &path, &md, owner)?;
        let id = tree.insert(at, inode)?;
        if md.is_dir() {
            copy_dir(tree, &path, at, owner, links)?;
        } else if md.nlink() > 1 {
            links.insert(key, id);
        }
        at.truncate(len);
    }
    Ok(())
}

fn inode_for(tree: &Tree, path: &Path, md: &fs::Metadata, owner: Owner) -> Result<Inode, LayerError> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir(BTreeMap::new())
    } else if ft.is_file() {
        Kind::File(Content::host(path).map_err(|e| LayerError::host(path, "reading", e))?)
    } else if ft.is_symlink() {
        let t = fs::read_link(path).map_err(|e| LayerError::host(path, "reading the link", e))?;
        Kind::Symlink(t.as_os_str().as_bytes().to_vec())
    } else if ft.is_char_device() {
        Kind::CharDev { major: libc::major(md.rdev()), minor: libc::minor(md.rdev()) }
    } else if ft.is_block_device() {
        Kind::BlockDev { major: libc::major(md.rdev()), minor: libc::minor(md.rdev()) }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let (mtime, nsec) = tree.clamp_time(md.mtime(), md.mtime_nsec() as u32);
    let (uid, gid) = match owner {
        Owner::Root => (0, 0),
        Owner::Preserve => (md.uid(), md.gid()),
    };
    let xattrs = read_xattrs(path).map_err(|e| LayerError::host(path, "reading xattrs", e))?;
    Ok(Inode { meta: Meta { mode: md.mode() & 0o7777, uid, gid, mtime, mtime_nsec: nsec, xattrs }, kind })
}

/// All extended attributes of `path` (not following symlinks), sorted.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut out = BTreeMap::new();
    // SAFETY: c is a valid C string; a null buffer asks for the size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(out),
            _ => Err(e),
        };
    }
    if n == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: the buffer has the size just reported.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("split at NUL");
        // SAFETY: valid C strings; null buffer asks for the size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut val = vec![0u8; len as usize];
        // SAFETY: the buffer has the size just reported.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        val.truncate(len as usize);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A host folder with the awkward cases is copied exactly.
    #[test]
    fn copies_special_bits_links_holes_and_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("f"), b"data").unwrap();
        fs::set_permissions(p.join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(p.join("f"), p.join("g")).unwrap();
        std::os::unix::fs::symlink("f", p.join("l")).unwrap();
        let sparse = fs::File::create(p.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        sparse.write_all_at(b"end", (64 << 20) - 3).unwrap();
        let c = CString::new(p.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let cf = CString::new(p.join("f").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and buffer.
        let xattr_ok = unsafe { libc::setxattr(cf.as_ptr(), c"user.test".as_ptr(), b"v".as_ptr().cast(), 1, 0) } == 0;

        let mut t = Tree::new(i64::MAX);
        let l = DirLayer { dir: String::new(), to: "/x".into(), owner: Owner::Root };
        apply(&mut t, &l, p).unwrap();
        let f = t.find(b"/x/f").unwrap();
        assert_eq!(t.find(b"/x/g"), Some(f), "hardlink shares the inode");
        assert_eq!(t.inode(f).meta.mode, 0o4755);
        assert_eq!((t.inode(f).meta.uid, t.inode(f).meta.gid), (0, 0));
        assert!(matches!(&t.inode(t.find(b"/x/l").unwrap()).kind, Kind::Symlink(s) if s == b"f"));
        assert!(matches!(t.inode(t.find(b"/x/fifo").unwrap()).kind, Kind::Fifo));
        if xattr_ok {
            assert_eq!(t.inode(f).meta.xattrs.get(&b"user.test"[..]).map(Vec::as_slice), Some(&b"v"[..]));
        }
        let Kind::File(c) = &t.inode(t.find(b"/x/sparse").unwrap()).kind else { panic!() };
        assert_eq!(c.len(), 64 << 20);
        let data: u64 = c.data_ranges().iter().map(|r| r.end - r.start).sum();
        assert!(data < 1 << 20, "holes kept: {:?}", c.data_ranges());
    }
}
