//! Inline layers: `file`, `mkdir`, `symlink`, `remove`, and RFC 2397 data URLs.

use std::path::Path;

use super::{Content, Inode, Kind, LayerError, Meta, Tree};
use crate::recipe::layer::{parse_data_url, parse_mode, FileLayer, MkdirLayer, SymlinkLayer};

/// Apply a `file` layer.
pub fn apply_file(tree: &mut Tree, l: &FileLayer, base_dir: &Path) -> Result<(), LayerError> {
    let content = if let Some(text) = &l.content {
        Content::bytes(text.as_bytes())
    } else if let Some(src) = &l.source {
        let p = base_dir.join(src);
        let meta = std::fs::metadata(&p).map_err(|e| LayerError::host(&p, "reading the `source` file", e))?;
        if !meta.is_file() {
            return Err(LayerError::Invalid(format!("`source` {} is not a regular file", p.display())));
        }
        Content::host(&p).map_err(|e| LayerError::host(&p, "reading the `source` file", e))?
    } else {
        let url = l.data.as_deref().unwrap_or_default();
        Content::bytes(parse_data_url(url).map_err(LayerError::Invalid)?)
    };
    let mode = l.mode.as_deref().map(parse_mode).transpose().map_err(LayerError::Invalid)?.unwrap_or(0o644);
    let mut meta = Meta::new(mode, tree.epoch());
    meta.uid = l.uid;
    meta.gid = l.gid;
    tree.insert(l.file.as_bytes(), Inode { meta, kind: Kind::File(content) })?;
    Ok(())
}

/// Apply a `mkdir` layer (parents are made as needed).
pub fn apply_mkdir(tree: &mut Tree, l: &MkdirLayer) -> Result<(), LayerError> {
    let mode = l.mode.as_deref().map(parse_mode).transpose().map_err(LayerError::Invalid)?.unwrap_or(0o755);
    let mut meta = Meta::new(mode, tree.epoch());
    meta.uid = l.uid;
    meta.gid = l.gid;
    tree.insert(l.mkdir.as_bytes(), Inode { meta, kind: Kind::Dir(Default::default()) })?;
    Ok(())
}

/// Apply a `symlink` layer.
pub fn apply_symlink(tree: &mut Tree, l: &SymlinkLayer) -> Result<(), LayerError> {
    let mut meta = Meta::new(0o777, tree.epoch());
    meta.uid = l.uid;
    meta.gid = l.gid;
    tree.insert(l.symlink.as_bytes(), Inode { meta, kind: Kind::Symlink(l.target.as_bytes().to_vec()) })?;
    Ok(())
}
