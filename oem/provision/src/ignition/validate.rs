//! Ignition 2.14's validation rules on the model (`config/v3_*/types`
//! `Validate` methods and `config/validate` duplicate checks), then what
//! this image refuses on top.

use super::content::{self, hash_parts, scheme, unit_sections};
use super::parse::{at, clean_path, diag};
use super::*;
use std::collections::BTreeMap;

fn e(d: &mut Vec<Diagnostic>, path: &str, msg: impl Into<String>) {
    diag(d, Severity::Error, path, msg);
}

fn w(d: &mut Vec<Diagnostic>, path: &str, msg: impl Into<String>) {
    diag(d, Severity::Warning, path, msg);
}

fn check_path(d: &mut Vec<Diagnostic>, path: &str, p: &str) {
    if p.is_empty() {
        e(d, path, "path not specified: an absolute path such as /etc/hostname");
    } else if !p.starts_with('/') {
        e(d, path, format!("{p:?} is not absolute: paths start with '/'"));
    } else if clean_path(p) != p {
        e(d, path, format!("{p:?} is not fully simplified: write {:?} (no '//', '/./', '/../' or trailing '/')", clean_path(p)));
    }
}

fn check_url(d: &mut Vec<Diagnostic>, path: &str, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        e(d, path, "unable to parse url: control characters (such as a raw newline) must be percent-encoded");
        return;
    }
    match scheme(s).as_deref() {
        Some("http" | "https" | "tftp" | "gs" | "s3" | "arn") => {}
        Some("data") => {
            if let Err(err) = content::decode_data_url(s) {
                e(d, path, err.to_string());
            }
        }
        _ => e(d, path, format!("invalid url scheme in {:?}: accepted are data, http, https, tftp, s3, arn, gs", trunc(s))),
    }
}

fn trunc(s: &str) -> String {
    if s.len() <= 40 {
        return s.into();
    }
    let mut n = 40;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    format!("{}…", &s[..n])
}

fn check_resource(d: &mut Vec<Diagnostic>, r: &Resource) {
    if let Some(c) = &r.compression {
        if !matches!(c.as_str(), "" | "gzip") {
            e(d, &at(&r.origin, "compression"), format!("invalid compression method {c:?}: accepted are \"gzip\" and \"\" (none)"));
        }
    }
    if let Some(h) = &r.hash {
        if r.source.is_none() {
            e(d, &at(&r.origin, "verification.hash"), "source must be specified if verification is specified");
        }
        if let Err(m) = hash_parts(h) {
            e(d, &at(&r.origin, "verification.hash"), m);
        }
    }
    if let Some(s) = r.source.as_deref().filter(|s| !s.is_empty()) {
        check_url(d, &at(&r.origin, "source"), s);
    }
    if !r.http_headers.is_empty() {
        let ok = r.source.as_deref().and_then(scheme).is_some_and(|s| s == "http" || s == "https");
        if !ok {
            e(d, &at(&r.origin, "httpHeaders"), "HTTP headers are only for http(s) sources");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, (n, v)) in r.http_headers.iter().enumerate() {
            let p = format!("{}.httpHeaders[{i}]", r.origin);
            if n.is_empty() {
                e(d, &at(&p, "name"), "HTTP header name can't be empty");
            }
            if v.as_deref() == Some("") {
                e(d, &at(&p, "value"), "unable to parse HTTP header: empty value");
            }
            if !seen.insert(n.clone()) {
                e(d, &p, "duplicate entry defined");
            }
        }
    }
}

fn check_required_source(d: &mut Vec<Diagnostic>, r: &Resource) {
    match r.source.as_deref() {
        None | Some("") => e(d, &r.origin, "source is required"),
        Some(_) => {}
    }
    check_resource(d, r);
}

fn check_mode(d: &mut Vec<Diagnostic>, origin: &str, mode: Option<i64>, spec: Option<Spec>) {
    let Some(m) = mode else { return };
    let p = at(origin, "mode");
    if !(0..=0o7777).contains(&m) {
        e(d, &p, format!("illegal file mode {m}: a number 0–4095 in decimal (420 is 0644)"));
    } else if m & 0o7000 != 0 && spec.is_some_and(|s| s.major == 3 && s.minor < 4) {
        w(d, &p, "setuid/setgid/sticky bits are not supported in spec versions older than 3.4.0");
    }
}

fn check_owner(d: &mut Vec<Diagnostic>, path: &str, o: &Owner) {
    if o.id.is_some() && o.name.as_deref().is_some_and(|n| !n.is_empty()) {
        e(d, path, "cannot set both id and name");
    }
}

fn check_node(d: &mut Vec<Diagnostic>, n: &Node) {
    check_path(d, &at(&n.origin, "path"), &n.path);
    check_owner(d, &at(&n.origin, "user"), &n.user);
    check_owner(d, &at(&n.origin, "group"), &n.group);
}

const UNIT_SUFFIXES: &[&str] =
    &[".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer", ".snapshot", ".slice", ".scope"];

fn ext(name: &str) -> &str {
    // Go's path.Ext: from the last '.' after the last '/'.
    let base = name.rsplit('/').next().unwrap_or(name);
    base.rfind('.').map_or("", |i| &base[i..])
}

/// Report duplicates in `keys` (in order) as Ignition does: on the second one.
fn dups<'a>(d: &mut Vec<Diagnostic>, seen: &mut BTreeMap<&'a str, ()>, key: &'a str, path: &str) {
    if seen.insert(key, ()).is_some() {
        e(d, path, "duplicate entry defined");
    }
}

pub(super) fn validate(cfg: &Config, d: &mut Vec<Diagnostic>) {
    let spec = cfg.spec;
    for r in &cfg.ignition.config.merge {
        check_required_source(d, r);
    }
    let mut seen = BTreeMap::new();
    for r in &cfg.ignition.config.merge {
        dups(d, &mut seen, r.source.as_deref().unwrap_or(""), &r.origin);
    }
    if let Some(r) = &cfg.ignition.config.replace {
        check_resource(d, r);
    }
    let mut seen = BTreeMap::new();
    for r in &cfg.ignition.security.certificate_authorities {
        check_required_source(d, r);
        dups(d, &mut seen, r.source.as_deref().unwrap_or(""), &r.origin);
    }
    for (v, p, http_ok) in [
        (&cfg.ignition.proxy.http_proxy, "ignition.proxy.httpProxy", true),
        (&cfg.ignition.proxy.https_proxy, "ignition.proxy.httpsProxy", false),
    ] {
        if let Some(v) = v {
            match scheme(v).as_deref() {
                Some("https") => {}
                Some("http") if http_ok => {}
                Some("http") => w(d, p, "insecure plaintext HTTP proxy specified for HTTPS resources"),
                _ => e(d, p, "proxies must be http(s)"),
            }
        }
    }
    let mut seen = BTreeMap::new();
    for (i, n) in cfg.ignition.proxy.no_proxy.iter().enumerate() {
        dups(d, &mut seen, n, &format!("ignition.proxy.noProxy[{i}]"));
    }

    // storage
    let st = &cfg.storage;
    for f in &st.files {
        check_node(d, &f.node);
        check_mode(d, &f.node.origin, f.mode, spec);
        if f.node.overwrite == Some(true) && f.contents.source.is_none() {
            e(
                d,
                &at(&f.node.origin, "overwrite"),
                "overwrite must be false if source is unspecified (give contents.source, or leave overwrite out)",
            );
        }
        check_resource(d, &f.contents);
        for a in &f.append {
            check_resource(d, a);
        }
    }
    for dir in &st.directories {
        check_node(d, &dir.node);
        check_mode(d, &dir.node.origin, dir.mode, spec);
    }
    for l in &st.links {
        check_node(d, &l.node);
    }
    for dir in &st.directories {
        if st.links.iter().any(|l| dir.node.path.starts_with(&format!("{}/", l.node.path))) {
            e(d, &dir.node.origin, "directory path includes link in config: create it under the link's target instead");
        }
    }
    for f in &st.files {
        if st.links.iter().any(|l| f.node.path.starts_with(&format!("{}/", l.node.path))) {
            e(d, &f.node.origin, "file path includes link in config: write it under the link's target instead");
        }
    }
    for l1 in &st.links {
        if st.links.iter().any(|l2| l1.node.path.starts_with(&format!("{}/", l2.node.path))) {
            e(d, &l1.node.origin, "link path includes link in config");
        }
        let Some(target) = l1.target.as_deref().filter(|t| !t.is_empty()) else {
            e(d, &at(&l1.node.origin, "target"), "link target is required");
            continue;
        };
        if l1.hard != Some(true) {
            continue;
        }
        let mut t = clean_path(target);
        if !t.starts_with('/') {
            t = clean_path(&format!("{}/{}", l1.node.path, target));
        }
        if st.directories.iter().any(|dir| dir.node.path == t) {
            e(d, &l1.node.origin, "hard link target is a directory");
        }
    }
    // Duplicates across directories, files and links (Ignition's field
    // order: directories, files, links).
    let mut seen = BTreeMap::new();
    for n in st.directories.iter().map(|x| &x.node).chain(st.files.iter().map(|x| &x.node)).chain(st.links.iter().map(|x| &x.node)) {
        dups(d, &mut seen, &n.path, &n.origin);
    }
    let mut seen = BTreeMap::new();
    for f in &st.filesystems {
        check_filesystem(d, f, spec.is_some_and(|s| s.major == 2));
        dups(d, &mut seen, &f.device, &f.origin);
    }
    let mut seen = BTreeMap::new();
    for disk in &st.disks {
        check_path(d, &at(&disk.origin, "device"), &disk.device);
        dups(d, &mut seen, &disk.device, &disk.origin);
    }
    let mut seen = BTreeMap::new();
    for r in &st.raid {
        if r.level.as_deref().unwrap_or("").is_empty() {
            e(d, &at(&r.origin, "level"), "raid level is required");
        }
        if r.devices.is_empty() {
            e(d, &at(&r.origin, "devices"), "raid devices required");
        }
        dups(d, &mut seen, &r.name, &r.origin);
    }
    let mut seen = BTreeMap::new();
    for l in &st.luks {
        if l.name.contains('/') {
            e(d, &at(&l.origin, "name"), "device names cannot contain slashes");
        }
        dups(d, &mut seen, &l.name, &l.origin);
    }

    // systemd
    let mut seen = BTreeMap::new();
    for u in &cfg.systemd.units {
        if !UNIT_SUFFIXES.contains(&ext(&u.name)) {
            e(
                d,
                &at(&u.origin, "name"),
                format!("invalid systemd unit extension in {:?}: accepted are {}", u.name, UNIT_SUFFIXES.join(", ")),
            );
        }
        let sections = match u.contents.as_deref().map(unit_sections) {
            Some(Err(m)) => {
                e(d, &at(&u.origin, "contents"), format!("invalid unit content: {m}"));
                None
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        if u.enabled == Some(true) {
            if let Some(s) = sections.filter(|_| u.contents.as_deref().is_some_and(|c| !c.is_empty())) {
                if !s.iter().any(|s| s == "Install") {
                    w(
                        d,
                        &at(&u.origin, "contents"),
                        format!("unit {:?} is enabled, but has no install section so enable does nothing", u.name),
                    );
                }
            }
        }
        let mut dseen = BTreeMap::new();
        for dr in &u.dropins {
            if let Some(Err(m)) = dr.contents.as_deref().map(unit_sections) {
                e(d, &at(&dr.origin, "contents"), format!("invalid unit content: {m}"));
            }
            if ext(&dr.name) != ".conf" {
                e(d, &at(&dr.origin, "name"), format!("invalid systemd drop-in extension in {:?}: drop-in names end in .conf", dr.name));
            }
            dups(d, &mut dseen, &dr.name, &dr.origin);
        }
        dups(d, &mut seen, &u.name, &u.origin);
    }

    // passwd
    let mut seen = BTreeMap::new();
    for u in &cfg.passwd.users {
        let mut kseen = BTreeMap::new();
        for (i, k) in u.ssh_authorized_keys.iter().enumerate() {
            dups(d, &mut kseen, k, &format!("{}.sshAuthorizedKeys[{i}]", u.origin));
        }
        let mut gseen = BTreeMap::new();
        for (i, g) in u.groups.iter().enumerate() {
            dups(d, &mut gseen, g, &format!("{}.groups[{i}]", u.origin));
        }
        dups(d, &mut seen, &u.name, &u.origin);
    }
    let mut seen = BTreeMap::new();
    for g in &cfg.passwd.groups {
        dups(d, &mut seen, &g.name, &g.origin);
    }
    let mut seen = BTreeMap::new();
    for (i, k) in cfg.kernel_arguments.should_exist.iter().enumerate() {
        dups(d, &mut seen, k, &format!("kernelArguments.shouldExist[{i}]"));
    }
    let mut seen = BTreeMap::new();
    for (i, k) in cfg.kernel_arguments.should_not_exist.iter().enumerate() {
        dups(d, &mut seen, k, &format!("kernelArguments.shouldNotExist[{i}]"));
    }
}

fn check_filesystem(d: &mut Vec<Diagnostic>, f: &Filesystem, v2: bool) {
    if let Some(p) = f.path.as_deref().filter(|p| !p.is_empty()) {
        check_path(d, &at(&f.origin, "path"), p);
    }
    // A 2.x filesystem given by `path` alone has no device.
    if !(v2 && f.device.is_empty()) {
        check_path(d, &at(&f.origin, "device"), &f.device);
    }
    let fmt = f.format.as_deref().unwrap_or("");
    if fmt.is_empty() {
        let others = f.path.as_deref().is_some_and(|p| !p.is_empty())
            || f.label.as_deref().is_some_and(|p| !p.is_empty())
            || f.uuid.as_deref().is_some_and(|p| !p.is_empty())
            || f.wipe_filesystem == Some(true)
            || !f.options.is_empty()
            || !f.mount_options.is_empty();
        if others && !v2 {
            e(
                d,
                &at(&f.origin, "format"),
                "format cannot be empty when path, label, uuid, wipeFilesystem, options, or mountOptions is specified",
            );
        }
    } else if !matches!(fmt, "ext4" | "btrfs" | "xfs" | "swap" | "vfat" | "none") {
        e(d, &at(&f.origin, "format"), format!("invalid filesystem format {fmt:?}: accepted are ext4, btrfs, xfs, vfat, swap, none"));
    }
    if let Some(l) = f.label.as_deref().filter(|l| !l.is_empty()) {
        let max = match fmt {
            "" => {
                e(d, &at(&f.origin, "label"), "filesystem must specify format if label is specified");
                return;
            }
            "ext4" => 16,
            "btrfs" => 256,
            "xfs" => 12,
            "swap" => 15,
            "vfat" => 11,
            _ => usize::MAX,
        };
        if l.len() > max {
            e(d, &at(&f.origin, "label"), format!("filesystem labels cannot be longer than {max} characters when using {fmt}"));
        }
    }
}

/// What Ignition accepts but this image does not do, each by field name;
/// and every `data:` URL decoded, decompressed and verified.
pub(super) fn unsupported(cfg: &Config, d: &mut Vec<Diagnostic>) {
    let not = "not supported by this image";
    for r in &cfg.ignition.config.merge {
        e(d, &r.origin, format!("merging other configs is {not}: put everything into one config"));
    }
    if let Some(r) = cfg.ignition.config.replace.as_ref().filter(|r| r.source.as_deref().is_some_and(|s| !s.is_empty())) {
        e(d, &r.origin, format!("replacing the config by another is {not}: give the final config as user_data"));
    }
    for r in &cfg.ignition.security.certificate_authorities {
        e(d, &r.origin, format!("custom certificate authorities are {not}: nothing is fetched over the network"));
    }
    for x in &cfg.storage.disks {
        e(d, &x.origin, format!("storage.disks is {not} (partitioning disks at first boot); use storage.filesystems on existing devices"));
    }
    for f in &cfg.storage.filesystems {
        if let Some(fmt) = f.format.as_deref().filter(|x| matches!(*x, "xfs" | "swap")) {
            e(d, &at(&f.origin, "format"), format!("format {fmt:?} is {not}: its own writers make ext4, btrfs and vfat"));
        }
        if !f.options.is_empty() {
            // The seed's 2.0.0 example passes `-f` (force) for its root:
            // a warning, so such configs still run.
            w(
                d,
                &at(&f.origin, "options"),
                "mkfs options are ignored by this image: the filesystem is written by the image's own writers (label and uuid are taken)",
            );
        }
    }
    for x in &cfg.storage.raid {
        e(d, &x.origin, format!("storage.raid is {not}"));
    }
    for x in &cfg.storage.luks {
        e(d, &x.origin, format!("storage.luks is {not}"));
    }
    if !cfg.kernel_arguments.should_exist.is_empty() || !cfg.kernel_arguments.should_not_exist.is_empty() {
        e(d, "kernelArguments", format!("changing kernel arguments is {not}: set them in the recipe"));
    }
    let mut res = |r: &Resource| {
        if let Err(err) = content::decode_resource(r) {
            e(d, &at(&r.origin, "source"), err.to_string());
        }
    };
    for f in &cfg.storage.files {
        res(&f.contents);
        f.append.iter().for_each(&mut res);
    }
}
