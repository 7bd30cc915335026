//! What the builder changes in a Debian root after mmdebstrap made it, so
//! that the image is the same bytes on every build and every machine, holds
//! nothing of the build machine or of the build, and boots as a *new*
//! machine. One list, [`RULES`], applied in order to the tree; docs/recipe.md
//! ("Debian roots") lists the same rules (a test checks each `what` is
//! there).
//!
//! Two of the rules are about the first boot rather than about bytes:
//!
//! - `/etc/machine-id` is `uninitialized`: systemd (252) then treats the
//!   first boot as the first boot (`ConditionFirstBoot=`, a new machine ID
//!   committed once /etc is writable). On a first boot, Debian 12's systemd
//!   also runs `preset-all` in *enable-only* mode (it is built without
//!   `first-boot-full-preset`), and Debian ships only systemd's own
//!   `90-systemd.preset`, whose default for any unit it does not name is
//!   "enable". Measured on a root with openssh-server and docker.io
//!   (`systemctl --root=… preset-all --preset-mode=enable-only`, the same
//!   function PID 1 calls): it would enable `ssh.socket` (which conflicts
//!   with the `ssh.service` the postinst enabled), systemd-networkd with its
//!   socket and wait-online, systemd-network-generator, systemd-sysext,
//!   remote-cryptsetup/veritysetup and ctrl-alt-del → reboot. Nothing that
//!   the postinsts enabled is disabled (enable-only never disables), but
//!   the machine would not be the one apt installed. So the root gets
//!   `/etc/systemd/system-preset/80-build-image.preset`: `enable` for every
//!   unit the packages enabled (what is linked in `/etc/systemd/system`),
//!   then `disable *`. Preset files are read in file-name order and the
//!   first match wins: this one comes before systemd's `90-…`, and an
//!   administrator's `00-…`–`79-…` before it. In enable-only mode it
//!   changes nothing; with a full preset (`systemctl preset-all`) it keeps
//!   the same units enabled.
//! - Debian 12 makes SSH host keys only in openssh-server's postinst (no
//!   boot-time generation: `ssh.service` is `sshd -t` + `sshd -D`, and
//!   sshd without keys exits `no hostkeys available`). The keys the
//!   postinst made at build time are removed (every image would share
//!   them), so with openssh-server in the set the root gets
//!   `ssh-hostkeys.service`: a oneshot `ssh-keygen -A` (makes only the
//!   missing keys) ordered before `ssh.service`/`ssh.socket`, enabled for
//!   `multi-user.target`.

use crate::tree::{Content, Inode, InodeId, Kind, Meta, Tree, TreeError};

/// What the rules need to know besides the tree.
#[derive(Debug, Clone)]
pub struct Context {
    /// The Debian suite of the lock (`bookworm`): the apt sources.
    pub suite: String,
    /// Names of the installed packages (the root set).
    pub installed: Vec<String>,
}

/// One normalisation rule.
pub struct Rule {
    /// What the rule does, as docs/recipe.md lists it.
    pub what: &'static str,
    apply: fn(&mut Tree, &Context) -> Result<(), TreeError>,
}

/// The rules, in the order they apply.
pub const RULES: &[Rule] = &[
    Rule { what: "`/etc/machine-id` is `uninitialized`", apply: machine_id },
    Rule { what: "no `/var/lib/dbus/machine-id`", apply: dbus_machine_id },
    Rule { what: "no random seed or credential secret under `/var/lib/systemd`", apply: random_seed },
    Rule { what: "no SSH host keys (`/etc/ssh/ssh_host_*`)", apply: ssh_host_keys },
    Rule { what: "`/etc/hostname` is `localhost`", apply: hostname },
    Rule { what: "no `/etc/resolv.conf` copied from the build machine, no `/etc/.resolv.conf.systemd-resolved.bak`", apply: resolv_conf },
    Rule { what: "no `99mmdebstrap` files in `/etc/apt/apt.conf.d` and `/etc/dpkg/dpkg.cfg.d`", apply: mmdebstrap_options },
    Rule {
        what: "no backups: `/var/lib/dpkg/*-old`, `/var/cache/debconf/*-old`, `/etc/passwd-`, `group-`, `shadow-`, `gshadow-`, `subuid-`, `subgid-`",
        apply: backups,
    },
    Rule { what: "apt's sources are Debian's (`/etc/apt/sources.list.d/debian.sources`), no `/etc/apt/sources.list`", apply: apt_sources },
    Rule {
        what: "no apt lists or caches: `/var/lib/apt/lists/*` (but `partial/` and `lock`), `/var/cache/apt/*.bin`, `/var/cache/apt/archives/*.deb`, `/var/cache/ldconfig/aux-cache`",
        apply: apt_caches,
    },
    Rule {
        what: "apt's `partial` folders belong to `_apt` (mode 0700), as apt makes them, whether or not apt could drop privileges at build time",
        apply: apt_partial,
    },
    Rule { what: "no logs: every file under `/var/log` is empty (owner and mode kept)", apply: logs },
    Rule { what: "with openssh-server: `ssh-hostkeys.service`, enabled", apply: ssh_hostkeys_unit },
    Rule {
        what: "with systemd: `/etc/systemd/system-preset/80-build-image.preset` keeps the enabled units as the packages left them",
        apply: presets,
    },
];

/// Apply every rule, in order.
pub fn normalise(tree: &mut Tree, ctx: &Context) -> Result<(), TreeError> {
    for r in RULES {
        (r.apply)(tree, ctx)?;
    }
    Ok(())
}

fn file(tree: &Tree, mode: u32, content: &[u8]) -> Inode {
    Inode { meta: Meta::new(mode, tree.epoch()), kind: Kind::File(Content::bytes(content.to_vec())) }
}

/// Replace (or create) a root-owned file, keeping an existing file's mode.
fn write(tree: &mut Tree, path: &str, default_mode: u32, content: &[u8]) -> Result<(), TreeError> {
    let mode = match tree.find(path.as_bytes()).map(|id| tree.inode(id)) {
        Some(Inode { meta, kind: Kind::File(_) }) => meta.mode,
        _ => default_mode,
    };
    tree.remove(path.as_bytes())?;
    let inode = file(tree, mode, content);
    tree.insert(path.as_bytes(), inode)?;
    Ok(())
}

/// Names in directory `dir` (none if it is missing or not a directory).
fn names(tree: &Tree, dir: &str) -> Vec<Vec<u8>> {
    match tree.find(dir.as_bytes()).map(|id| &tree.inode(id).kind) {
        Some(Kind::Dir(children)) => children.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn remove_where(tree: &mut Tree, dir: &str, pred: impl Fn(&[u8]) -> bool) -> Result<(), TreeError> {
    for n in names(tree, dir) {
        if pred(&n) {
            let mut p = dir.as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(&n);
            tree.remove(&p)?;
        }
    }
    Ok(())
}

fn remove_all(tree: &mut Tree, paths: &[&str]) -> Result<(), TreeError> {
    for p in paths {
        tree.remove(p.as_bytes())?;
    }
    Ok(())
}

fn machine_id(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    write(tree, "/etc/machine-id", 0o444, b"uninitialized\n")
}

fn dbus_machine_id(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_all(tree, &["/var/lib/dbus/machine-id"])
}

fn random_seed(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_all(tree, &["/var/lib/systemd/random-seed", "/var/lib/systemd/credential.secret"])
}

fn ssh_host_keys(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_where(tree, "/etc/ssh", |n| n.starts_with(b"ssh_host_"))
}

fn hostname(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    // Not `write`: mmdebstrap copies the build machine's file with its mode.
    tree.remove(b"/etc/hostname")?;
    let inode = file(tree, 0o644, b"localhost\n");
    tree.insert(b"/etc/hostname", inode)?;
    Ok(())
}

fn resolv_conf(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    if !matches!(tree.find(b"/etc/resolv.conf").map(|id| &tree.inode(id).kind), Some(Kind::Symlink(_))) {
        tree.remove(b"/etc/resolv.conf")?;
    }
    remove_all(tree, &["/etc/.resolv.conf.systemd-resolved.bak"])
}

fn mmdebstrap_options(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_all(tree, &["/etc/apt/apt.conf.d/99mmdebstrap", "/etc/dpkg/dpkg.cfg.d/99mmdebstrap"])
}

fn backups(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_where(tree, "/var/lib/dpkg", |n| n.ends_with(b"-old"))?;
    remove_where(tree, "/var/cache/debconf", |n| n.ends_with(b"-old"))?;
    remove_all(tree, &["/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-"])
}

/// Debian's sources for `suite`, in the deb822 form Debian's cloud images
/// use (the suite, its -updates, and the security archive).
pub fn debian_sources(suite: &str) -> String {
    format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite} {suite}-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {suite}-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

fn apt_sources(tree: &mut Tree, ctx: &Context) -> Result<(), TreeError> {
    if tree.find(b"/etc/apt").is_none() {
        return Ok(());
    }
    tree.remove(b"/etc/apt/sources.list")?;
    let inode = file(tree, 0o644, debian_sources(&ctx.suite).as_bytes());
    tree.insert(b"/etc/apt/sources.list.d/debian.sources", inode)?;
    Ok(())
}

fn apt_caches(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    remove_where(tree, "/var/lib/apt/lists", |n| n != b"partial" && n != b"lock")?;
    remove_where(tree, "/var/cache/apt", |n| n.ends_with(b".bin"))?;
    remove_where(tree, "/var/cache/apt/archives", |n| n.ends_with(b".deb"))?;
    remove_all(tree, &["/var/cache/ldconfig/aux-cache"])
}

/// The uid of `user` in the tree's `/etc/passwd`.
fn passwd_uid(tree: &Tree, user: &str) -> Option<u32> {
    let Kind::File(c) = &tree.inode(tree.find(b"/etc/passwd")?).kind else { return None };
    let mut b = vec![0u8; c.len() as usize];
    c.open().ok()?.read_exact_at(&mut b, 0).ok()?;
    String::from_utf8_lossy(&b).lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user)).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

/// apt downloads as `_apt` into its `partial` folders, and mmdebstrap
/// leaves them owned by `_apt` unless `_apt` could not reach the chroot
/// (an output folder others cannot enter), when apt runs unsandboxed and
/// they stay root's: the build folder's mode must not show in the image.
fn apt_partial(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    let Some(uid) = passwd_uid(tree, "_apt") else { return Ok(()) };
    for p in ["/var/lib/apt/lists/partial", "/var/cache/apt/archives/partial"] {
        if let Some(id) = tree.find(p.as_bytes()) {
            let m = &mut tree.inode_mut(id).meta;
            (m.uid, m.gid, m.mode) = (uid, 0, 0o700);
        }
    }
    Ok(())
}

fn logs(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    let Some(log) = tree.find(b"/var/log") else { return Ok(()) };
    let mut files: Vec<InodeId> = Vec::new();
    let mut stack = vec![log];
    while let Some(d) = stack.pop() {
        if let Kind::Dir(children) = &tree.inode(d).kind {
            for &id in children.values() {
                match &tree.inode(id).kind {
                    Kind::Dir(_) => stack.push(id),
                    Kind::File(c) if !c.is_empty() => files.push(id),
                    _ => {}
                }
            }
        }
    }
    for id in files {
        tree.inode_mut(id).kind = Kind::File(Content::bytes(Vec::new()));
    }
    Ok(())
}

/// The first-boot SSH host key unit.
pub const SSH_HOSTKEYS_UNIT: &str = "\
[Unit]
Description=Generate missing SSH host keys (first boot)
Documentation=man:ssh-keygen(1)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=ssh.service ssh.socket sshd.service multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

fn ssh_hostkeys_unit(tree: &mut Tree, ctx: &Context) -> Result<(), TreeError> {
    if !ctx.installed.iter().any(|p| p == "openssh-server") {
        return Ok(());
    }
    let unit = "/etc/systemd/system/ssh-hostkeys.service";
    let inode = file(tree, 0o644, SSH_HOSTKEYS_UNIT.as_bytes());
    tree.insert(unit.as_bytes(), inode)?;
    let link = Inode { meta: Meta::new(0o777, tree.epoch()), kind: Kind::Symlink(unit.as_bytes().to_vec()) };
    tree.insert(b"/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service", link)?;
    Ok(())
}

/// The preset file's lines for the units enabled in `/etc/systemd/system`:
/// every symlink there (aliases) and in its `*.wants`, `*.requires` and
/// `*.upholds` folders names its unit file; a link to a template under
/// another name is an instance (`getty@tty1.service` → `enable
/// getty@.service tty1`). Masks (links to /dev/null) are left out.
pub fn preset_lines(tree: &Tree) -> Vec<String> {
    let mut enabled: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let base = "/etc/systemd/system";
    let mut visit = |name: &[u8], target: &[u8]| {
        if target == b"/dev/null" {
            return;
        }
        let unit = String::from_utf8_lossy(target.rsplit(|b| *b == b'/').next().unwrap_or(target)).into_owned();
        let name = String::from_utf8_lossy(name).into_owned();
        let instances = enabled.entry(unit.clone()).or_default();
        if let (Some((tpl, suffix)), Some((pre, inst))) = (unit.split_once("@."), name.split_once('@')) {
            let inst = inst.strip_suffix(&format!(".{suffix}")).unwrap_or(inst);
            if pre == tpl && !inst.is_empty() {
                instances.insert(inst.to_string());
            }
        }
    };
    let Some(dir) = tree.find(base.as_bytes()) else { return Vec::new() };
    let Kind::Dir(children) = &tree.inode(dir).kind else { return Vec::new() };
    for (name, &id) in children {
        match &tree.inode(id).kind {
            Kind::Symlink(t) => visit(name, t),
            Kind::Dir(sub) if [&b".wants"[..], b".requires", b".upholds"].iter().any(|s| name.ends_with(s)) => {
                for (n, &i) in sub {
                    if let Kind::Symlink(t) = &tree.inode(i).kind {
                        visit(n, t);
                    }
                }
            }
            _ => {}
        }
    }
    enabled
        .into_iter()
        .map(|(unit, inst)| {
            if inst.is_empty() {
                format!("enable {unit}")
            } else {
                format!("enable {unit} {}", inst.into_iter().collect::<Vec<_>>().join(" "))
            }
        })
        .collect()
}

fn presets(tree: &mut Tree, _: &Context) -> Result<(), TreeError> {
    if tree.find(b"/usr/lib/systemd/system-preset").is_none() {
        return Ok(());
    }
    let mut text = String::from(
        "# build-image: the units the packages' maintainer scripts enabled stay enabled,\n\
         # and no other, on the first boot (machine-id `uninitialized`: systemd runs\n\
         # preset-all) and on any later `systemctl preset-all`. Earlier files win.\n",
    );
    for l in preset_lines(tree) {
        text.push_str(&l);
        text.push('\n');
    }
    text.push_str("disable *\n");
    let inode = file(tree, 0o644, text.as_bytes());
    tree.insert(b"/etc/systemd/system-preset/80-build-image.preset", inode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(t: &mut Tree, path: &str, mode: u32, data: &[u8]) {
        let i = file(t, mode, data);
        t.insert(path.as_bytes(), i).unwrap();
    }

    fn link(t: &mut Tree, path: &str, target: &str) {
        t.insert(path.as_bytes(), Inode { meta: Meta::new(0o777, 0), kind: Kind::Symlink(target.as_bytes().to_vec()) }).unwrap();
    }

    fn text(t: &Tree, path: &str) -> Option<String> {
        match &t.inode(t.find(path.as_bytes())?).kind {
            Kind::File(c) => {
                let mut b = vec![0u8; c.len() as usize];
                c.open().unwrap().read_exact_at(&mut b, 0).unwrap();
                Some(String::from_utf8(b).unwrap())
            }
            _ => None,
        }
    }

    /// A tree with what mmdebstrap leaves, normalised: each rule's effect.
    #[test]
    fn every_rule_does_what_it_says() {
        let mut t = Tree::new(100);
        put(&mut t, "/etc/machine-id", 0o644, b"");
        put(&mut t, "/var/lib/dbus/machine-id", 0o644, b"0123\n");
        put(&mut t, "/var/lib/systemd/random-seed", 0o600, b"x");
        put(&mut t, "/etc/ssh/ssh_host_ed25519_key", 0o600, b"k");
        put(&mut t, "/etc/ssh/ssh_host_ed25519_key.pub", 0o644, b"k");
        put(&mut t, "/etc/ssh/sshd_config", 0o644, b"c");
        put(&mut t, "/etc/hostname", 0o755, b"buildhost\n");
        put(&mut t, "/etc/resolv.conf", 0o644, b"nameserver 10.0.0.1\n");
        put(&mut t, "/etc/.resolv.conf.systemd-resolved.bak", 0o755, b"nameserver 10.0.0.1\n");
        put(&mut t, "/etc/apt/apt.conf.d/99mmdebstrap", 0o644, b"x");
        put(&mut t, "/etc/dpkg/dpkg.cfg.d/99mmdebstrap", 0o644, b"x");
        put(&mut t, "/var/lib/dpkg/status-old", 0o644, b"x");
        put(&mut t, "/var/lib/dpkg/status", 0o644, b"x");
        put(&mut t, "/var/cache/debconf/config.dat-old", 0o644, b"x");
        put(&mut t, "/etc/passwd-", 0o644, b"x");
        put(&mut t, "/etc/gshadow-", 0o640, b"x");
        put(&mut t, "/etc/apt/sources.list", 0o644, b"deb [trusted=yes] copy:///tmp/x/repo ./\n");
        put(&mut t, "/var/lib/apt/lists/lock", 0o640, b"");
        put(&mut t, "/var/lib/apt/lists/x_Packages", 0o644, b"x");
        t.insert(b"/var/lib/apt/lists/partial", Inode { meta: Meta::new(0o755, 0), kind: Kind::Dir(Default::default()) }).unwrap();
        put(&mut t, "/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n");
        put(&mut t, "/var/cache/apt/pkgcache.bin", 0o644, b"x");
        put(&mut t, "/var/cache/apt/archives/a_1_all.deb", 0o644, b"x");
        put(&mut t, "/var/cache/ldconfig/aux-cache", 0o600, b"x");
        let mut wtmp = file(&t, 0o664, b"login records");
        wtmp.meta.gid = 43;
        t.insert(b"/var/log/wtmp", wtmp).unwrap();
        put(&mut t, "/var/log/apt/history.log", 0o644, b"Start-Date: today");
        put(&mut t, "/usr/lib/systemd/system-preset/90-systemd.preset", 0o644, b"enable systemd-networkd.service\n");
        link(&mut t, "/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service");
        link(&mut t, "/etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service");
        link(&mut t, "/etc/systemd/system/getty.target.wants/getty@tty1.service", "/lib/systemd/system/getty@.service");
        link(&mut t, "/etc/systemd/system/timers.target.wants/apt-daily.timer", "/lib/systemd/system/apt-daily.timer");
        link(&mut t, "/etc/systemd/system/hwclock.service", "/dev/null");
        let ctx = Context { suite: "bookworm".into(), installed: vec!["openssh-server".into(), "systemd".into()] };
        normalise(&mut t, &ctx).unwrap();

        assert_eq!(text(&t, "/etc/machine-id").as_deref(), Some("uninitialized\n"));
        assert_eq!(t.inode(t.find(b"/etc/machine-id").unwrap()).meta.mode, 0o644, "an existing file keeps its mode");
        for gone in [
            "/var/lib/dbus/machine-id",
            "/var/lib/systemd/random-seed",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/resolv.conf",
            "/etc/.resolv.conf.systemd-resolved.bak",
            "/etc/apt/apt.conf.d/99mmdebstrap",
            "/etc/dpkg/dpkg.cfg.d/99mmdebstrap",
            "/var/lib/dpkg/status-old",
            "/var/cache/debconf/config.dat-old",
            "/etc/passwd-",
            "/etc/gshadow-",
            "/etc/apt/sources.list",
            "/var/lib/apt/lists/x_Packages",
            "/var/cache/apt/pkgcache.bin",
            "/var/cache/apt/archives/a_1_all.deb",
            "/var/cache/ldconfig/aux-cache",
        ] {
            assert!(t.find(gone.as_bytes()).is_none(), "{gone} is still there");
        }
        for kept in ["/etc/ssh/sshd_config", "/var/lib/dpkg/status", "/var/lib/apt/lists/lock", "/var/lib/apt/lists/partial"] {
            assert!(t.find(kept.as_bytes()).is_some(), "{kept} was removed");
        }
        let h = t.inode(t.find(b"/etc/hostname").unwrap());
        assert_eq!((h.meta.mode, text(&t, "/etc/hostname").unwrap().as_str()), (0o644, "localhost\n"));
        let sources = text(&t, "/etc/apt/sources.list.d/debian.sources").unwrap();
        assert!(sources.contains("Suites: bookworm bookworm-updates\n") && sources.contains("Suites: bookworm-security\n"), "{sources}");
        let partial = t.inode(t.find(b"/var/lib/apt/lists/partial").unwrap());
        assert_eq!((partial.meta.uid, partial.meta.gid, partial.meta.mode), (42, 0, 0o700));
        let w = t.inode(t.find(b"/var/log/wtmp").unwrap());
        assert_eq!((w.meta.mode, w.meta.gid, text(&t, "/var/log/wtmp").unwrap().as_str()), (0o664, 43, ""));
        assert_eq!(text(&t, "/var/log/apt/history.log").as_deref(), Some(""));
        assert_eq!(text(&t, "/etc/systemd/system/ssh-hostkeys.service").as_deref(), Some(SSH_HOSTKEYS_UNIT));
        assert!(matches!(&t.inode(t.find(b"/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service").unwrap()).kind,
                Kind::Symlink(s) if s == b"/etc/systemd/system/ssh-hostkeys.service"));
        let preset = text(&t, "/etc/systemd/system-preset/80-build-image.preset").unwrap();
        let lines: Vec<&str> = preset.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["enable apt-daily.timer", "enable getty@.service tty1", "enable ssh-hostkeys.service", "enable ssh.service", "disable *"],
            "{preset}"
        );
    }

    #[test]
    fn without_openssh_or_systemd_nothing_is_added() {
        let mut t = Tree::new(100);
        put(&mut t, "/etc/resolv.conf.keep", 0o644, b"");
        link(&mut t, "/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf");
        normalise(&mut t, &Context { suite: "bookworm".into(), installed: vec!["sudo".into()] }).unwrap();
        assert!(t.find(b"/etc/systemd").is_none());
        assert!(t.find(b"/etc/apt").is_none(), "no apt, no sources");
        assert!(t.find(b"/etc/resolv.conf").is_some(), "systemd-resolved's symlink stays");
        assert_eq!(text(&t, "/etc/machine-id").as_deref(), Some("uninitialized\n"));
        assert_eq!(t.inode(t.find(b"/etc/machine-id").unwrap()).meta.mode, 0o444);
    }

    /// docs/recipe.md lists every rule, in the words of `what`.
    #[test]
    fn the_docs_list_every_rule() {
        let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/recipe.md")).unwrap();
        for r in RULES {
            assert!(doc.contains(r.what), "docs/recipe.md does not list the rule: {}", r.what);
        }
    }
}
