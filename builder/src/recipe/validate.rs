//! Semantic checks that the types alone cannot express. Each failure is
//! `(json_path, message)`, and the message says how to fix it.

use super::layer::{parse_data_url, parse_mode, path_components, BadPath, Layer};
use super::{partition_type_guid, Filesystem, Recipe, Size};

type Check = Result<(), (String, String)>;

fn fail(field: impl Into<String>, msg: impl Into<String>) -> Check {
    Err((field.into(), msg.into()))
}

/// Whether `name` matches `[a-z0-9][a-z0-9._-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

pub fn validate(r: &Recipe) -> Check {
    if !valid_name(&r.name) {
        return fail("name", format!("`{}` is not a valid name: use [a-z0-9][a-z0-9._-]*, e.g. \"demo\"", r.name));
    }
    for (tree, layers) in &r.trees {
        if tree.is_empty() {
            return fail("trees", "a tree name cannot be empty");
        }
        if tree == "<oem>" {
            return fail("trees", "`<oem>` is reserved for the OEM partition's tree: choose another name");
        }
        for (i, layer) in layers.iter().enumerate() {
            check_layer(&format!("trees.{tree}[{i}]"), layer)?;
            if matches!(layer, Layer::Debian(_)) && i > 0 {
                return fail(
                    format!("trees.{tree}[{i}]"),
                    "a debian layer installs a whole system: make it the first layer of its tree (layers after it add to or change what it installed)",
                );
            }
        }
    }
    if let Some(init) = &r.initramfs {
        if !r.trees.contains_key(&init.tree) {
            return fail("initramfs.tree", format!("no tree named `{}` in `trees` (have: {})", init.tree, names(r)));
        }
        if let Some(level) = init.level {
            let max = match init.compression {
                super::Compression::Gzip => 9,
                super::Compression::Zstd => 19,
                super::Compression::None => 0,
            };
            if level == 0 || level > max {
                return fail("initramfs.level", format!("level {level} is out of range for {:?} (1–{max})", init.compression));
            }
        }
    }
    if r.outputs.contains(&super::Output::Initramfs) && r.initramfs.is_none() && r.kernel.is_none() {
        return fail("outputs", "output `initramfs` needs an `initramfs` section naming its tree (or a `kernel`)");
    }
    for o in [super::Output::Uki, super::Output::KernelInitramfs] {
        if r.outputs.contains(&o) && r.kernel.is_none() {
            return fail(
                "outputs",
                format!("output `{}` needs a `kernel`", if o == super::Output::Uki { "uki" } else { "kernel+initramfs" }),
            );
        }
    }
    if let Some(k) = &r.kernel {
        match (&k.package, &k.image) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return fail("kernel", "give exactly one of `package` (a locked Debian package or a .deb) or `image` (a kernel file)"),
        }
        if k.image.is_some() && !k.modules.is_empty() {
            return fail("kernel.modules", "modules come from a kernel package; a bare `image` has none");
        }
        if k.image.is_some() && k.drivers != super::Drivers::Needed {
            return fail("kernel.drivers", "drivers are modules from a kernel package; a bare `image` has none");
        }
    }
    if let Some(init) = &r.init {
        if init.is_empty() || init[0].is_empty() {
            return fail("init", "give the command as an array, e.g. [\"/bin/sh\", \"-c\", \"echo ready\"]");
        }
    }
    if let Some(b) = &r.boot {
        if b.firmware.is_empty() {
            return fail("boot.firmware", "name at least one of \"uefi\", \"bios\"");
        }
        if r.kernel.is_none() {
            return fail("boot", "booting needs a `kernel`");
        }
        if b.firmware.contains(&super::Firmware::Bios) {
            let has = r.disk.as_ref().is_some_and(|d| d.partitions.iter().any(|p| p.type_ == "bios-boot"));
            if !has {
                return fail("boot.firmware", "\"bios\" needs a partition of type \"bios-boot\" (1 MiB is enough) for GRUB's core image");
            }
        }
    }
    if let Some(oem) = &r.oem {
        if let Some(u) = &oem.user {
            if !valid_user(u) {
                return fail(
                    "oem.user",
                    format!("`{u}` is not a valid user name: use [a-z_][a-z0-9_-]*, at most 32 characters, e.g. \"core\""),
                );
            }
        }
        if let Some(h) = &oem.hostname {
            if !valid_hostname(h) {
                return fail(
                    "oem.hostname",
                    format!("`{h}` is not a valid host name: dot-separated labels of letters, digits and `-`, at most 253 characters"),
                );
            }
        }
        for (i, k) in oem.ssh_authorized_keys.iter().flatten().enumerate() {
            if k.trim().is_empty() || k.contains('\n') {
                return fail(
                    format!("oem.ssh_authorized_keys[{i}]"),
                    "one public key per entry, on one line, e.g. \"ssh-ed25519 AAAA… me@host\"",
                );
            }
        }
    }
    if let Some(disk) = &r.disk {
        let oem: Vec<usize> = disk.partitions.iter().enumerate().filter(|(_, p)| p.is_oem()).map(|(i, _)| i).collect();
        if oem.len() > 1 {
            return fail(
                format!("disk.partitions[{}].label", oem[1]),
                format!("only one partition may be labelled OEM; partitions {oem:?} all are"),
            );
        }
        if let Some(&i) = oem.first() {
            if disk.partitions[i].filesystem == Filesystem::None {
                return fail(
                    format!("disk.partitions[{i}].filesystem"),
                    "the OEM partition holds the OEM configuration: give it a filesystem (vfat, ext4 or btrfs)",
                );
            }
        }
        let mut fills = Vec::new();
        for (i, p) in disk.partitions.iter().enumerate() {
            let at = format!("disk.partitions[{i}]");
            if p.label.is_empty() || p.label.encode_utf16().count() > 36 {
                return fail(format!("{at}.label"), "a GPT partition name must be 1 to 36 UTF-16 characters");
            }
            if partition_type_guid(&p.type_).is_none() {
                return fail(
                    format!("{at}.type"),
                    format!(
                        "unknown partition type `{}`: use esp, bios-boot, linux, root-x86-64, usr-x86-64, swap, home, srv, var, tmp, xbootldr, or a GUID",
                        p.type_
                    ),
                );
            }
            match p.size {
                Size::Fill => fills.push(i),
                Size::Bytes(0) => return fail(format!("{at}.size"), "a partition cannot be empty"),
                Size::Bytes(b) if b % 512 != 0 => {
                    return fail(format!("{at}.size"), format!("{b} bytes is not a multiple of the 512-byte sector"))
                }
                Size::Auto if matches!(p.filesystem, Filesystem::Ext4 | Filesystem::Btrfs) => {}
                Size::Auto => {
                    return fail(
                        format!("{at}.size"),
                        format!("\"auto\" needs a filesystem that can be sized to its content; {:?} cannot: give a size", p.filesystem),
                    )
                }
                _ => {}
            }
            if p.grow {
                if i + 1 != disk.partitions.len() {
                    return fail(
                        format!("{at}.grow"),
                        format!(
                            "only the last partition may grow (this is partition {} of {}): move it to the end",
                            i + 1,
                            disk.partitions.len()
                        ),
                    );
                }
                if p.type_ == "esp" || !matches!(p.filesystem, Filesystem::Ext4 | Filesystem::Btrfs | Filesystem::None) {
                    return fail(format!("{at}.grow"), "only ext4 and btrfs can be grown online (or a partition without a filesystem)");
                }
                if r.kernel.is_none() {
                    return fail(format!("{at}.grow"), "growing happens at boot, by the guest agent: the recipe needs a `kernel`");
                }
            }
            if let Some(h) = &p.fs.headroom {
                super::size::Headroom::parse(h).map_err(|e| (format!("{at}.fs.headroom"), e))?;
            }
            if let Some(t) = &p.tree {
                if !r.trees.contains_key(t) {
                    return fail(format!("{at}.tree"), format!("no tree named `{t}` in `trees` (have: {})", names(r)));
                }
                if p.filesystem == Filesystem::None && p.type_ != "esp" {
                    return fail(format!("{at}.tree"), "a tree needs a filesystem to go into: set `filesystem`");
                }
            }
        }
        if fills.len() > 1 {
            return fail(
                format!("disk.partitions[{}].size", fills[1]),
                format!("only one partition may be \"fill\"; partitions {fills:?} all are"),
            );
        }
        if !fills.is_empty() && disk.size.is_none() {
            return fail("disk.size", "a \"fill\" partition needs `disk.size` to know how much is left");
        }
        if let Some(s) = disk.size {
            if s.bytes().is_none() {
                return fail("disk.size", "the disk size must be a number of bytes or a string like \"2GiB\"");
            }
        }
    } else if let Some(o) =
        r.outputs.iter().find(|o| matches!(o, super::Output::Raw | super::Output::Qcow2 | super::Output::Vhd | super::Output::Vmdk))
    {
        return fail("disk", format!("output `{o:?}` needs a `disk` with partitions (or drop it from `outputs`)").to_lowercase());
    }
    check_oci(r)?;
    if let Some(l) = r.qcow2.as_ref().and_then(|q| q.level) {
        if !(1..=9).contains(&l) {
            return fail("qcow2.level", format!("{l} is not a compression level: use 1 (fast) to 9 (small)"));
        }
    }
    Ok(())
}

/// The `oci` output and its section.
fn check_oci(r: &Recipe) -> Check {
    let Some(o) = &r.oci else {
        if r.outputs.contains(&super::Output::Oci) {
            return fail(
                "outputs",
                "output `oci` needs an `oci` section naming the tree to put in the image, e.g. \"oci\": {\"tree\": \"root\"}",
            );
        }
        return Ok(());
    };
    if !r.trees.contains_key(&o.tree) {
        return fail("oci.tree", format!("no tree named `{}` in `trees` (have: {})", o.tree, names(r)));
    }
    let tag = o.tag_or_default(&r.name);
    if let Err(e) = super::ImageRef::parse(&tag) {
        let hint = if o.tag.is_none() { " (the default `NAME:latest`, from `name`): set `oci.tag`, e.g. \"appliance:1.0\"" } else { "" };
        return fail("oci.tag", format!("{e}{hint}"));
    }
    for (i, e) in o.env.iter().flatten().enumerate() {
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) || e.contains('\0') {
            return fail(format!("oci.env[{i}]"), format!("`{e}` is not `KEY=VALUE`, e.g. \"PATH=/usr/bin:/bin\""));
        }
    }
    if let Some(w) = &o.working_dir {
        if !w.starts_with('/') {
            return fail("oci.working_dir", format!("`{w}` must be an absolute path, like \"/srv/www\""));
        }
    }
    for (i, p) in o.exposed_ports.iter().flatten().enumerate() {
        if exposed_port(p).is_none() {
            return fail(
                format!("oci.exposed_ports[{i}]"),
                format!("`{p}` is not a port: PORT (1–65535) or PORT/tcp, PORT/udp, PORT/sctp, e.g. \"80/tcp\""),
            );
        }
    }
    if o.labels.iter().flatten().any(|(k, _)| k.is_empty()) {
        return fail("oci.labels", "a label needs a name");
    }
    Ok(())
}

/// An `exposed_ports` entry as the image config's `ExposedPorts` key:
/// `80` → `80/tcp`; `None` when it is not a port.
pub fn exposed_port(p: &str) -> Option<String> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let n: u16 = port.parse().ok().filter(|n| *n > 0 && !port.starts_with(['0', '+']))?;
    matches!(proto, "tcp" | "udp" | "sctp").then(|| format!("{n}/{proto}"))
}

/// A login name: `[a-z_][a-z0-9_-]*`, at most 32 characters.
pub fn valid_user(u: &str) -> bool {
    let mut c = u.chars();
    u.len() <= 32
        && matches!(c.next(), Some(x) if x.is_ascii_lowercase() || x == '_')
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_' || x == '-')
}

/// An RFC 1123 host name.
pub fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn names(r: &Recipe) -> String {
    let v: Vec<&str> = r.trees.keys().map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod grow_tests {
    fn check(parts: serde_json::Value, kernel: bool) -> Result<(), (String, String)> {
        let mut r = serde_json::json!({"name": "g", "disk": {"size": "1GiB", "partitions": parts}});
        if kernel {
            r["kernel"] = serde_json::json!({"package": "linux-image-cloud-amd64"});
        }
        super::validate(&serde_json::from_value(r).unwrap())
    }

    #[test]
    fn only_the_last_partition_may_grow() {
        let esp = serde_json::json!({"label": "ESP", "type": "esp", "size": "64MiB"});
        let root =
            |grow: bool| serde_json::json!({"label": "root", "type": "root-x86-64", "size": "fill", "filesystem": "ext4", "grow": grow});
        let mut esp_grows = esp.clone();
        esp_grows["grow"] = true.into();
        assert!(check(serde_json::json!([esp, root(true)]), true).is_ok());
        assert!(check(serde_json::json!([esp, root(false)]), true).is_ok());
        let (field, msg) = check(serde_json::json!([esp_grows, root(false)]), true).unwrap_err();
        assert_eq!(field, "disk.partitions[0].grow");
        assert!(msg.contains("only the last partition"), "{msg}");
        let (field, _) = check(serde_json::json!([esp, esp_grows]), true).unwrap_err();
        assert_eq!(field, "disk.partitions[1].grow", "vfat cannot grow online");
        let (field, msg) = check(serde_json::json!([esp, root(true)]), false).unwrap_err();
        assert_eq!(field, "disk.partitions[1].grow");
        assert!(msg.contains("kernel"), "{msg}");
    }

    #[test]
    fn grow_false_leaves_the_canonical_recipe_unchanged() {
        let p: super::super::Partition =
            serde_json::from_value(serde_json::json!({"label": "r", "type": "linux", "size": "1MiB", "grow": false})).unwrap();
        assert!(serde_json::to_value(&p).unwrap().get("grow").is_none(), "the recipe digest of existing recipes must not change");
    }
}

#[cfg(test)]
mod drivers_tests {
    fn kernel(k: serde_json::Value) -> Result<(), (String, String)> {
        super::validate(&serde_json::from_value(serde_json::json!({"name": "d", "kernel": k, "outputs": ["kernel+initramfs"]})).unwrap())
    }

    #[test]
    fn generic_drivers_need_a_kernel_package() {
        assert_eq!(kernel(serde_json::json!({"package": "linux-image-cloud-amd64", "drivers": "generic"})), Ok(()));
        assert_eq!(kernel(serde_json::json!({"image": "vmlinuz", "drivers": "needed"})), Ok(()));
        let (field, msg) = kernel(serde_json::json!({"image": "vmlinuz", "drivers": "generic"})).unwrap_err();
        assert_eq!(field, "kernel.drivers");
        assert!(msg.contains("bare `image`"), "{msg}");
    }

    #[test]
    fn the_default_leaves_the_canonical_recipe_unchanged() {
        for k in [serde_json::json!({"package": "p"}), serde_json::json!({"package": "p", "drivers": "needed"})] {
            let k: super::super::Kernel = serde_json::from_value(k).unwrap();
            assert_eq!(serde_json::to_value(&k).unwrap(), serde_json::json!({"package": "p"}), "the recipe digest must not change");
        }
        let k: super::super::Kernel = serde_json::from_value(serde_json::json!({"package": "p", "drivers": "generic"})).unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap()["drivers"], "generic");
    }
}

fn check_mode(at: &str, mode: &Option<String>) -> Check {
    if let Some(m) = mode {
        parse_mode(m).map_err(|e| (format!("{at}.mode"), e))?;
    }
    Ok(())
}

fn check_layer(at: &str, layer: &Layer) -> Check {
    match layer {
        Layer::File(f) => {
            let n = [f.content.is_some(), f.source.is_some(), f.data.is_some()].iter().filter(|b| **b).count();
            if n != 1 {
                return fail(at, "a file layer needs exactly one of `content`, `source` or `data`");
            }
            if let Some(d) = &f.data {
                parse_data_url(d).map_err(|e| (format!("{at}.data"), e))?;
            }
            check_mode(at, &f.mode)?;
            check_tree_path(&format!("{at}.file"), &f.file)
        }
        Layer::Mkdir(m) => {
            check_mode(at, &m.mode)?;
            check_tree_path(&format!("{at}.mkdir"), &m.mkdir)
        }
        Layer::Symlink(s) => {
            if s.target.is_empty() {
                return fail(format!("{at}.target"), "a symlink target cannot be empty");
            }
            check_tree_path(&format!("{at}.symlink"), &s.symlink)
        }
        Layer::Remove(rm) => check_tree_path(&format!("{at}.remove"), &rm.remove),
        Layer::Dir(d) => check_tree_path(&format!("{at}.to"), &d.to),
        Layer::Tar(t) => check_tree_path(&format!("{at}.to"), &t.to),
        Layer::Deb(d) => check_tree_path(&format!("{at}.to"), &d.to),
        Layer::Oci(o) => check_tree_path(&format!("{at}.to"), &o.to),
        Layer::Debian(d) => {
            for (i, p) in d.debian.packages.iter().enumerate() {
                if !valid_package_name(p) {
                    return fail(
                        format!("{at}.debian.packages[{i}]"),
                        format!("`{p}` is not a Debian package name: lower-case letters, digits, `+`, `-` and `.`, at least two, starting with a letter or digit (no versions: the lock pins them)"),
                    );
                }
            }
            for (i, u) in d.debian.enable.iter().enumerate() {
                if !valid_unit_name(u) {
                    return fail(
                        format!("{at}.debian.enable[{i}]"),
                        format!("`{u}` is not a systemd unit name: a name of letters, digits and `:-_.\\@` with its type, like \"systemd-networkd.service\""),
                    );
                }
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, u) in d.debian.users.iter().enumerate() {
                let at = format!("{at}.debian.users[{i}]");
                if !valid_user_name(&u.name) {
                    return fail(
                        format!("{at}.name"),
                        format!("`{}` is not a user name useradd takes: `[a-z_][a-z0-9_-]*`, at most 32 characters", u.name),
                    );
                }
                if !names.insert(u.name.as_str()) {
                    return fail(format!("{at}.name"), format!("user `{}` is listed twice", u.name));
                }
                for (j, g) in u.groups.iter().enumerate() {
                    if !valid_user_name(g) {
                        return fail(
                            format!("{at}.groups[{j}]"),
                            format!("`{g}` is not a group name: `[a-z_][a-z0-9_-]*`, at most 32 characters"),
                        );
                    }
                }
                if !u.shell.starts_with('/') || u.shell.contains([':', '\n']) {
                    return fail(format!("{at}.shell"), format!("`{}` must be an absolute path, like \"/bin/bash\"", u.shell));
                }
                if u.comment.as_deref().is_some_and(|c| c.contains([':', '\n'])) {
                    return fail(format!("{at}.comment"), "the comment is a field of /etc/passwd: no `:` and no line break");
                }
                if u.uid.is_some_and(|uid| uid == 0 || uid >= 60000) {
                    return fail(format!("{at}.uid"), "a user's uid is from 1 to 59999 (0 is root; Debian keeps 60000 and up for itself)");
                }
            }
            Ok(())
        }
    }
}

/// A systemd unit name: `NAME.TYPE`, NAME of `[A-Za-z0-9:_.\\@-]`, at most
/// 255 characters.
pub fn valid_unit_name(u: &str) -> bool {
    const TYPES: [&str; 11] = ["service", "socket", "target", "timer", "path", "mount", "automount", "swap", "slice", "scope", "device"];
    let Some((name, kind)) = u.rsplit_once('.') else { return false };
    u.len() <= 255
        && !name.is_empty()
        && TYPES.contains(&kind)
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '@' | '-'))
}

/// A user or group name as Debian's `useradd` takes it (without
/// `--badname`): `[a-z_][a-z0-9_-]*`, 1 to 32 characters.
pub fn valid_user_name(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// A Debian package name (Debian Policy 5.6.1): `[a-z0-9][a-z0-9+.-]+`.
pub fn valid_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

fn check_tree_path(at: &str, p: &str) -> Check {
    if !p.starts_with('/') {
        return fail(at, format!("`{p}` must be an absolute path in the tree, like \"/etc/hostname\""));
    }
    match path_components(p.as_bytes()) {
        Ok(_) => Ok(()),
        Err(BadPath::Escape) => fail(at, format!("`{p}` climbs above the root of the tree with `..`")),
        Err(BadPath::Nul) => fail(at, format!("`{p}` contains a NUL byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: serde_json::Value) -> Result<(), (String, String)> {
        let mut base = serde_json::json!({"name": "x", "outputs": []});
        crate::recipe::merge(&mut base, v);
        let r: Recipe = serde_json::from_value(base).map_err(|e| ("parse".to_string(), e.to_string()))?;
        validate(&r)
    }

    fn oem_disk(fs: &str, second: bool) -> serde_json::Value {
        let mut parts = vec![serde_json::json!({"label": "OEM", "type": "linux", "size": "8MiB", "filesystem": fs})];
        if second {
            parts
                .push(serde_json::json!({"label": "other", "type": "linux", "size": "8MiB", "filesystem": "vfat", "fs": {"label": "OEM"}}));
        }
        serde_json::json!({"disk": {"partitions": parts}})
    }

    #[test]
    fn oem_section_and_partition_checks() {
        assert!(check(oem_disk("vfat", false)).is_ok());
        assert!(check(serde_json::json!({"oem": {"platform": "metal", "user": "admin", "hostname": "a.b-c"}})).is_ok());
        let at = |v| check(v).unwrap_err().0;
        assert_eq!(at(oem_disk("none", false)), "disk.partitions[0].filesystem");
        assert_eq!(at(oem_disk("vfat", true)), "disk.partitions[1].label");
        assert_eq!(at(serde_json::json!({"oem": {"user": "Root!"}})), "oem.user");
        assert_eq!(at(serde_json::json!({"oem": {"hostname": "-bad-"}})), "oem.hostname");
        assert_eq!(at(serde_json::json!({"oem": {"ssh_authorized_keys": ["ok key", "two\nlines"]}})), "oem.ssh_authorized_keys[1]");
        assert_eq!(at(serde_json::json!({"trees": {"<oem>": []}})), "trees");
        // Unknown platform and unknown keys are type errors.
        assert!(check(serde_json::json!({"oem": {"platform": "aws"}})).is_err());
        assert!(check(serde_json::json!({"oem": {"usr": "core"}})).is_err());
        assert!(check(serde_json::json!({"trees": {"t": [{"oci": "x.tar", "to": "relative"}]}})).is_err());
    }

    #[test]
    fn oci_output_section() {
        let tree = serde_json::json!({"root": [{"mkdir": "/x"}], "etc": []});
        let ok = |v: serde_json::Value| {
            let mut r = serde_json::json!({"trees": tree, "outputs": ["oci"]});
            crate::recipe::merge(&mut r, v);
            check(r)
        };
        assert_eq!(ok(serde_json::json!({"oci": {"tree": "root"}})), Ok(()));
        assert_eq!(
            ok(serde_json::json!({"oci": {"tree": "root", "tag": "example.com:5000/team/app:1.0", "entrypoint": ["/bin/sh"], "cmd": [],
                "env": ["A=", "PATH=/bin"], "working_dir": "/", "user": "", "exposed_ports": ["80", "53/udp"], "labels": {"k": "v"}}})),
            Ok(())
        );
        let (f, m) = ok(serde_json::json!({})).unwrap_err();
        assert_eq!(f, "outputs");
        assert!(m.contains("`oci` section"), "{m}");
        let (f, m) = ok(serde_json::json!({"oci": {"tree": "x"}})).unwrap_err();
        assert_eq!(f, "oci.tree");
        assert!(m.contains("no tree named `x`") && m.contains("etc, root"), "{m}");
        for (v, field) in [
            (serde_json::json!({"tag": "Nginx:1"}), "oci.tag"),
            (serde_json::json!({"tag": "nginx@sha256:00"}), "oci.tag"),
            (serde_json::json!({"env": ["A=1", "B"]}), "oci.env[1]"),
            (serde_json::json!({"env": ["=x"]}), "oci.env[0]"),
            (serde_json::json!({"working_dir": "srv"}), "oci.working_dir"),
            (serde_json::json!({"exposed_ports": ["80/tcp", "0"]}), "oci.exposed_ports[1]"),
            (serde_json::json!({"exposed_ports": ["80/icmp"]}), "oci.exposed_ports[0]"),
            (serde_json::json!({"exposed_ports": ["65536"]}), "oci.exposed_ports[0]"),
            (serde_json::json!({"labels": {"": "v"}}), "oci.labels"),
        ] {
            let mut o = serde_json::json!({"tree": "root"});
            crate::recipe::merge(&mut o, v.clone());
            assert_eq!(ok(serde_json::json!({"oci": o})).unwrap_err().0, field, "{v}");
        }
        // The default tag comes from the name; a name Docker refuses needs a tag.
        let (f, m) = ok(serde_json::json!({"name": "a..b", "oci": {"tree": "root"}})).unwrap_err();
        assert_eq!(f, "oci.tag");
        assert!(m.contains("set `oci.tag`"), "{m}");
        assert_eq!(ok(serde_json::json!({"name": "a..b", "oci": {"tree": "root", "tag": "ab"}})), Ok(()));
        // Unknown keys are type errors.
        assert!(ok(serde_json::json!({"oci": {"tree": "root", "ports": []}})).unwrap_err().1.contains("unknown field"));
        assert_eq!(exposed_port("80").as_deref(), Some("80/tcp"));
        assert_eq!(exposed_port("053"), None);
    }

    #[test]
    fn debian_layers() {
        let deb = |p: serde_json::Value| serde_json::json!({"debian": {"packages": p}});
        assert!(check(serde_json::json!({"trees": {"root": [deb(serde_json::json!(["systemd-sysv", "libstdc++6", "g++-12"]))]}})).is_ok());
        assert!(check(serde_json::json!({"trees": {"root": [{"debian": {}}]}})).is_ok(), "no packages: Debian's base alone");
        let at = |v| check(v).unwrap_err();
        let (f, m) = at(serde_json::json!({"trees": {"root": [deb(serde_json::json!(["sudo", "openssh-server=1:9.2"]))]}}));
        assert_eq!(f, "trees.root[0].debian.packages[1]");
        assert!(m.contains("no versions"), "{m}");
        assert_eq!(at(serde_json::json!({"trees": {"root": [deb(serde_json::json!(["Sudo"]))]}})).0, "trees.root[0].debian.packages[0]");
        let (f, m) = at(serde_json::json!({"trees": {"root": [{"mkdir": "/x"}, deb(serde_json::json!([]))]}}));
        assert_eq!(f, "trees.root[1]");
        assert!(m.contains("first layer"), "{m}");
        // Units to enable and users to create.
        let root = |d: serde_json::Value| serde_json::json!({"trees": {"root": [{"debian": d}]}});
        let ok = root(
            serde_json::json!({"packages": ["systemd-sysv", "sudo"], "enable": ["systemd-networkd.service", "getty@ttyS0.service"],
            "users": [{"name": "core", "groups": ["sudo", "docker"], "comment": "CoreOS Admin"}, {"name": "_svc", "uid": 1500, "shell": "/usr/sbin/nologin"}]}),
        );
        assert!(check(ok).is_ok());
        for (d, field) in [
            (serde_json::json!({"enable": ["networkd"]}), "trees.root[0].debian.enable[0]"),
            (serde_json::json!({"enable": ["a.service", "b c.service"]}), "trees.root[0].debian.enable[1]"),
            (serde_json::json!({"users": [{"name": "Core"}]}), "trees.root[0].debian.users[0].name"),
            (serde_json::json!({"users": [{"name": "core"}, {"name": "core"}]}), "trees.root[0].debian.users[1].name"),
            (serde_json::json!({"users": [{"name": "core", "groups": ["sudo", "a:b"]}]}), "trees.root[0].debian.users[0].groups[1]"),
            (serde_json::json!({"users": [{"name": "core", "shell": "bash"}]}), "trees.root[0].debian.users[0].shell"),
            (serde_json::json!({"users": [{"name": "core", "comment": "a:b"}]}), "trees.root[0].debian.users[0].comment"),
            (serde_json::json!({"users": [{"name": "core", "uid": 0}]}), "trees.root[0].debian.users[0].uid"),
        ] {
            assert_eq!(at(root(d.clone())).0, field, "{d}");
        }
        // Unknown keys are type errors naming the layer kind.
        let e = at(serde_json::json!({"trees": {"root": [{"debian": {"packages": [], "suite": "trixie"}}]}}));
        assert!(e.1.contains("debian layer"), "{e:?}");
    }
}
