//! `users[]` and SSH keys through [`crate::passwd`] (the `useradd --root`
//! rules shared with Ignition).
//!
//! * A user that does not exist is created as coreos-cloudinit's
//!   `useradd` call created it: `--create-home` unless `no_create_home`,
//!   password `*` unless `passwd` is given, `--gid`, `--groups`,
//!   `--no-user-group`, `--system`, `--shell`, `--comment`.
//!   Groups (supplementary and primary) that do not exist are created
//!   first, as cloud-init does (coreos-cloudinit's `useradd` failed on
//!   them). A `system` account gets no home, as cloud-init's `useradd -M`
//!   (coreos-cloudinit created one unless `no_create_home`).
//! * A user that exists only gets its password (when `passwd` is given),
//!   as coreos-cloudinit did ("User exists, ignoring creation-time
//!   fields"); `lock_passwd: true` locks it (`!` before the hash).
//! * Keys are added to `~/.ssh/authorized_keys`, keeping the keys already
//!   there (cloud-init; coreos-cloudinit kept its own fragment in
//!   `authorized_keys.d/coreos-cloudinit` and merged, which Debian's sshd
//!   does not read).

use super::User;
use crate::passwd::{self, GroupSpec, UserSpec};
use std::path::Path;

/// Create or update the user; `day` is today's day number (shadow's `lastchg`).
pub(crate) fn ensure_user(root: &Path, u: &User, day: i64) -> Result<String, String> {
    let existing = passwd::lookup_user(root, &u.name).map_err(|e| e.to_string())?;
    let lock = |h: Option<String>| -> Option<String> {
        match (u.lock_passwd, h) {
            (true, Some(h)) if !h.starts_with('!') => Some(format!("!{h}")),
            (true, None) => Some("!".into()),
            (_, h) => h,
        }
    };
    if existing.is_some() {
        let hash = lock(u.passwd.clone());
        if hash.is_none() {
            return Ok(format!("{} exists; creation-time fields ignored, as coreos-cloudinit does", u.name));
        }
        let spec = UserSpec { name: u.name.clone(), password_hash: hash, ..Default::default() };
        let out = passwd::ensure_user(root, &spec, day).map_err(|e| e.to_string())?;
        return Ok(format!("{} exists; password set ({out:?}); other fields ignored, as coreos-cloudinit does", u.name));
    }
    let mut created_groups = Vec::new();
    for g in u.groups.iter().chain(&u.primary_group) {
        if passwd::lookup_group(root, g).map_err(|e| e.to_string())?.is_none() && g.parse::<u32>().is_err() {
            passwd::ensure_group(root, &GroupSpec { name: g.clone(), ..Default::default() }).map_err(|e| format!("group {g}: {e}"))?;
            created_groups.push(g.as_str());
        }
    }
    let spec = UserSpec {
        name: u.name.clone(),
        uid: u.uid,
        password_hash: lock(u.passwd.clone()),
        gecos: u.gecos.clone(),
        home_dir: u.homedir.clone(),
        // cloud-init's `useradd -M` for system accounts (coreos-cloudinit
        // passed --create-home unless no_create_home).
        create_home: !u.no_create_home && !u.system,
        primary_group: u.primary_group.clone(),
        groups: u.groups.clone(),
        no_user_group: u.no_user_group,
        no_log_init: false,
        shell: u.shell.clone(),
        system: u.system,
    };
    let out = passwd::ensure_user(root, &spec, day).map_err(|e| e.to_string())?;
    let groups = if created_groups.is_empty() { String::new() } else { format!("; groups created first: {}", created_groups.join(", ")) };
    Ok(format!("{}: {out:?}{groups}", u.name))
}

/// Add the keys missing from the user's `~/.ssh/authorized_keys`.
pub(crate) fn authorize_keys(root: &Path, user: &str, keys: &[String]) -> Result<String, String> {
    let u =
        passwd::lookup_user(root, user).map_err(|e| e.to_string())?.ok_or_else(|| format!("no user {user:?} in the root's /etc/passwd"))?;
    let file = root.join(u.home.trim_start_matches('/')).join(".ssh/authorized_keys");
    let mut all: Vec<String> = std::fs::read_to_string(&file).unwrap_or_default().lines().map(String::from).collect();
    let before = all.len();
    for k in keys {
        let k = k.trim();
        if !k.is_empty() && !all.iter().any(|l| l.trim() == k) {
            all.push(k.to_string());
        }
    }
    if all.len() == before && file.exists() {
        return Ok(format!("{user}: all {} key(s) already there", keys.len()));
    }
    let path = passwd::set_authorized_keys(root, user, &all).map_err(|e| e.to_string())?;
    Ok(format!("{}: {} key(s) added", path.strip_prefix(root).unwrap_or(&path).display(), all.len() - before))
}
