//! What the build machine needs to run mmdebstrap, and how it runs it:
//! `--mode=root` as root, `--mode=unshare` otherwise (never `auto`, which
//! silently falls back to fakechroot when user namespaces do not work).
//!
//! Unshare mode maps root in the namespace to the first id of the user's
//! range in `/etc/subuid` and `/etc/subgid` (matched by user *name*, as
//! mmdebstrap does), through the setuid `newuidmap`/`newgidmap` of the
//! `uidmap` package, and needs unprivileged user namespaces. Whatever is
//! missing is reported at once, in one message that says how to fix each.

use std::path::{Path, PathBuf};

/// How mmdebstrap runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As root: `--mode=root`.
    Root,
    /// As another user, in a user namespace: `--mode=unshare`.
    Unshare,
}

impl Mode {
    pub fn arg(self) -> &'static str {
        match self {
            Mode::Root => "--mode=root",
            Mode::Unshare => "--mode=unshare",
        }
    }
}

/// mmdebstrap's hook folder that merges /usr before the essential packages
/// are unpacked (and installs `usr-is-merged` in place of `usrmerge`).
pub const MERGED_USR_HOOK: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

/// The facts about the build machine that decide the mode. Gathered by
/// [`Host::probe`]; a plain struct so the decision is testable.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub euid: u32,
    pub user: String,
    pub mmdebstrap: bool,
    pub merged_usr_hook: bool,
    pub newuidmap: bool,
    pub newgidmap: bool,
    /// Contents of /etc/subuid and /etc/subgid (None: missing/unreadable).
    pub subuid: Option<String>,
    pub subgid: Option<String>,
    /// `user.max_user_namespaces` (None: unknown).
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (a Debian kernel patch; None
    /// where the kernel does not have it).
    pub unprivileged_userns_clone: Option<u64>,
}

/// The first executable `name` on `$PATH` (or in the usual system folders).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(PathBuf::from)).map(|d| d.join(name)).find(
        |p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        },
    )
}

/// Only `$PATH`: whether the build can run `name` the way it runs mmdebstrap.
fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| {
        use std::os::unix::fs::PermissionsExt;
        d.join(name).metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The name of user `uid` (from the passwd database), or the number.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives the use
    // of `pw`'s string fields, which are copied before it is dropped.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r == 0 && !out.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated.
        return unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned();
    }
    uid.to_string()
}

impl Host {
    /// Look at this machine.
    pub fn probe() -> Host {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Host {
            euid,
            user: user_name(euid),
            mmdebstrap: on_path("mmdebstrap"),
            merged_usr_hook: Path::new(MERGED_USR_HOOK).join("setup00.sh").is_file(),
            newuidmap: which("newuidmap").is_some(),
            newgidmap: which("newgidmap").is_some(),
            subuid: std::fs::read_to_string("/etc/subuid").ok(),
            subgid: std::fs::read_to_string("/etc/subgid").ok(),
            max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
        }
    }

    /// The mode mmdebstrap runs in here, or one message naming everything
    /// that is missing and how to get it.
    pub fn mode(&self) -> Result<Mode, String> {
        let mut missing = Vec::new();
        if !self.mmdebstrap {
            missing.push("mmdebstrap (`apt-get install mmdebstrap`)".to_string());
        } else if !self.merged_usr_hook {
            missing
                .push(format!("mmdebstrap's merged-usr hook ({MERGED_USR_HOOK}; mmdebstrap 1.3 or later: `apt-get install mmdebstrap`)"));
        }
        let mode = if self.euid == 0 { Mode::Root } else { Mode::Unshare };
        if mode == Mode::Unshare {
            if !self.newuidmap || !self.newgidmap {
                missing.push("newuidmap and newgidmap (`apt-get install uidmap`)".to_string());
            }
            let has = |f: &Option<String>| f.as_deref().is_some_and(|t| has_range(t, &self.user));
            let u = &self.user;
            match (has(&self.subuid), has(&self.subgid)) {
                (true, true) => {}
                (uid, gid) => {
                    let files = match (uid, gid) {
                        (false, false) => "/etc/subuid and /etc/subgid",
                        (false, true) => "/etc/subuid",
                        _ => "/etc/subgid",
                    };
                    missing.push(format!(
                        "a subordinate id range for user `{u}` in {files} (a line `{u}:100000:65536` in each, e.g. by `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {u}` as root)"
                    ));
                }
            }
            if self.max_user_namespaces == Some(0) || self.unprivileged_userns_clone == Some(0) {
                missing.push(
                    "unprivileged user namespaces (`sysctl -w user.max_user_namespaces=15000`, and `sysctl -w kernel.unprivileged_userns_clone=1` where that exists)"
                        .to_string(),
                );
            }
        }
        if missing.is_empty() {
            return Ok(mode);
        }
        let how = if mode == Mode::Unshare {
            format!("as user `{}` (not root), mmdebstrap --mode=unshare", self.user)
        } else {
            "mmdebstrap".into()
        };
        Err(format!(
            "building a Debian root runs {how}, which needs: {}{}",
            missing.join("; "),
            if mode == Mode::Unshare { ". Or build as root (mmdebstrap --mode=root)" } else { "" }
        ))
    }
}

/// Whether a subuid/subgid file has a range for `user` (by name, as
/// mmdebstrap reads it: `NAME:START:COUNT`, COUNT > 0).
pub fn has_range(text: &str, user: &str) -> bool {
    text.lines().any(|l| {
        let mut f = l.trim().split(':');
        f.next() == Some(user)
            && f.next().is_some_and(|s| s.parse::<u64>().is_ok())
            && f.next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
    })
}

/// In unshare mode the package repository and the modules are read by
/// the namespace's root, a subordinate uid: every folder above `dir` must
/// let others through. The first that does not, if any.
pub fn unreachable_ancestor(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.canonicalize().ok()?;
    dir.ancestors().skip(1).find(|a| a.metadata().is_ok_and(|m| m.permissions().mode() & 0o001 == 0)).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Host {
        Host {
            euid: 1000,
            user: "builder".into(),
            mmdebstrap: true,
            merged_usr_hook: true,
            newuidmap: true,
            newgidmap: true,
            subuid: Some("other:1:2\nbuilder:100000:65536\n".into()),
            subgid: Some("builder:100000:65536\n".into()),
            max_user_namespaces: Some(96369),
            unprivileged_userns_clone: None,
        }
    }

    #[test]
    fn root_runs_root_mode_and_users_unshare_mode() {
        assert_eq!(
            Host { euid: 0, user: "root".into(), mmdebstrap: true, merged_usr_hook: true, ..Default::default() }.mode(),
            Ok(Mode::Root)
        );
        assert_eq!(ready().mode(), Ok(Mode::Unshare));
    }

    #[test]
    fn everything_missing_is_named_once_with_its_fix() {
        let e = Host { euid: 0, user: "root".into(), ..Default::default() }.mode().unwrap_err();
        assert!(e.contains("mmdebstrap (`apt-get install mmdebstrap`)"), "{e}");
        assert!(!e.contains("uidmap") && !e.contains("subuid"), "root needs neither: {e}");
        let e = Host { euid: 1000, user: "ann".into(), max_user_namespaces: Some(0), ..Default::default() }.mode().unwrap_err();
        for want in [
            "mmdebstrap (`apt-get install mmdebstrap`)",
            "`apt-get install uidmap`",
            "for user `ann` in /etc/subuid and /etc/subgid",
            "`ann:100000:65536`",
            "user namespaces",
            "Or build as root",
        ] {
            assert!(e.contains(want), "missing {want:?} in: {e}");
        }
        // One file lacks the range; a zero-length range does not count.
        let mut h = ready();
        h.subgid = Some("builder:100000:0\n".into());
        let e = h.mode().unwrap_err();
        assert!(e.contains("in /etc/subgid (") && !e.contains("uidmap"), "{e}");
        let mut h = ready();
        h.unprivileged_userns_clone = Some(0);
        assert!(h.mode().unwrap_err().contains("kernel.unprivileged_userns_clone=1"));
        let mut h = ready();
        h.merged_usr_hook = false;
        assert!(h.mode().unwrap_err().contains("merged-usr hook"));
    }

    #[test]
    fn ranges_match_by_name() {
        assert!(has_range("builder:100000:65536", "builder"));
        assert!(!has_range("builder2:100000:65536\n#builder:1:2", "builder"));
        assert!(!has_range("builder:x:65536", "builder"));
    }
}
