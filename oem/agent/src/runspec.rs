//! How the appliance command runs, beyond its argv: `/etc/agent/env`
//! (`KEY=VALUE` lines), `/etc/agent/workdir` and `/etc/agent/user`
//! (`uid[:gid]` or `name[:group]`, names looked up in `/etc/passwd` and
//! `/etc/group`), as the builder writes them from a container image's
//! config. Parsing is pure; [`RunSpec::load`] reads the files.

use std::fs;
use std::path::Path;

pub const ENV_FILE: &str = "/etc/agent/env";
pub const WORKDIR_FILE: &str = "/etc/agent/workdir";
pub const USER_FILE: &str = "/etc/agent/user";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSpec {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// (uid, gid)
    pub user: Option<(u32, u32)>,
}

/// `KEY=VALUE` lines; blank lines and lines without `=` are skipped.
pub fn parse_env(s: &str) -> Vec<(String, String)> {
    s.lines().filter_map(|l| l.split_once('=').filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

fn lookup(db: &str, name: &str, field: usize) -> Option<u32> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(field).and_then(|v| v.parse().ok())).flatten()
    })
}

/// Resolve an OCI `User` (`uid`, `uid:gid`, `name`, `name:group`) against
/// the contents of `/etc/passwd` and `/etc/group`. A user without a group
/// gets its passwd group (or its uid's number when it is not listed).
pub fn parse_user(s: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let (u, g) = match s.trim().split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s.trim(), None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup(passwd, u, 2).ok_or_else(|| format!("user `{u}` is not in /etc/passwd"))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, 2).ok_or_else(|| format!("group `{g}` is not in /etc/group"))?,
        },
        None => passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid)).then(|| f.get(3).and_then(|v| v.parse().ok())).flatten()
            })
            .unwrap_or(uid),
    };
    Ok((uid, gid))
}

impl RunSpec {
    /// Read the files (missing = default); a bad `user` is an error.
    pub fn load() -> Result<RunSpec, String> {
        let read = |p: &str| fs::read_to_string(p).ok();
        let env = read(ENV_FILE).map(|s| parse_env(&s)).unwrap_or_default();
        let workdir = read(WORKDIR_FILE).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let user = match read(USER_FILE).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            Some(u) => Some(parse_user(&u, &read("/etc/passwd").unwrap_or_default(), &read("/etc/group").unwrap_or_default())?),
            None => None,
        };
        Ok(RunSpec { env, workdir, user })
    }

    /// Apply to a command: environment on top, working directory (which
    /// must exist), user and group.
    pub fn apply(&self, c: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(w) = &self.workdir {
            if Path::new(w).is_dir() {
                c.current_dir(w);
            }
        }
        if let Some((uid, gid)) = self.user {
            c.gid(gid).uid(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        assert_eq!(
            parse_env("PATH=/bin\nGREETING=hi there\n\nnoeq\nX==y\n"),
            vec![("PATH".into(), "/bin".into()), ("GREETING".into(), "hi there".into()), ("X".into(), "=y".into())]
        );
    }

    #[test]
    fn users() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(parse_user("1000", passwd, group), Ok((1000, 1000)));
        assert_eq!(parse_user("1000:5", passwd, group), Ok((1000, 5)));
        assert_eq!(parse_user("www", passwd, group), Ok((33, 34)));
        assert_eq!(parse_user("www:staff", passwd, group), Ok((33, 50)));
        assert_eq!(parse_user("33", passwd, group), Ok((33, 34)));
        assert!(parse_user("nobody", passwd, group).is_err());
        assert!(parse_user("www:nogroup", passwd, group).is_err());
    }
}
