//! Inline layers: `file`, `mkdir`, `symlink`, `remove`, and RFC 2397 data URLs.

use std::path::Path;

use base64::Engine;

use super::{Content, Inode, Kind, LayerError, Meta, Tree};
use crate::recipe::layer::{parse_mode, FileLayer, MkdirLayer, SymlinkLayer};

/// Decode an RFC 2397 `data:` URL (`data:,hello%20world`,
/// `data:text/plain;base64,aGVsbG8=`) into its bytes.
pub fn parse_data_url(url: &str) -> Result<Vec<u8>, String> {
    let rest = url.strip_prefix("data:").ok_or_else(|| format!("`{}` is not a data URL: it must start with \"data:\"", short(url)))?;
    let comma = rest.find(',').ok_or("a data URL needs a comma before its data, e.g. \"data:,hello\"")?;
    let (meta, data) = (&rest[..comma], &rest[comma + 1..]);
    let raw: Vec<u8> = percent_encoding::percent_decode_str(data).collect();
    if meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
        let clean: Vec<u8> = raw.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(&clean).map_err(|e| format!("the base64 data of the data URL is invalid: {e}"))
    } else {
        Ok(raw)
    }
}

fn short(s: &str) -> String {
    s.chars().take(24).collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(parse_data_url("data:,hello%20world").unwrap(), b"hello world");
        assert_eq!(parse_data_url("data:text/plain;base64,aGVsbG8=").unwrap(), b"hello");
        assert!(parse_data_url("http://x").is_err());
        assert!(parse_data_url("data:;base64,@@@").is_err());
    }
}
