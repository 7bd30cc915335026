//! JSON → [`Config`]: a walk over `serde_json::Value` that knows the keys
//! of each spec version, so that every type error names its JSON path and
//! every unknown key is reported (as a warning, as Ignition does).
//! Spec 2.x is read with its own keys and translated on the way.

use super::*;
use serde_json::{Map, Value};

const V3_VERSIONS: &[(&str, u8, bool)] = &[
    ("3.0.0", 0, false),
    ("3.1.0", 1, false),
    ("3.2.0", 2, false),
    ("3.3.0", 3, false),
    ("3.4.0", 4, false),
    ("3.4.0-experimental", 4, true),
];

pub(super) fn diag(diags: &mut Vec<Diagnostic>, severity: Severity, path: &str, message: impl Into<String>) {
    diags.push(Diagnostic { severity, path: path.to_string(), message: message.into(), line: None, column: None });
}

/// The JSON path of `key` under `base`.
pub(super) fn at(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// The version from a document: `(major, minor, patch, pre)`.
fn parse_version(v: &str) -> Option<(u64, u64, u64, String)> {
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, p.to_string()),
        None => (v, String::new()),
    };
    let mut it = core.split('.');
    let n = |s: Option<&str>| -> Option<u64> {
        let s = s?;
        if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let r = (n(it.next())?, n(it.next())?, n(it.next())?, pre);
    if it.next().is_some() {
        return None;
    }
    Some(r)
}

pub(super) fn parse(data: &[u8], diags: &mut Vec<Diagnostic>) -> Option<Config> {
    let data = crate::userdata::strip_bom(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        diag(diags, Severity::Error, "", "not a config (empty)");
        return None;
    }
    let value: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: String::new(),
                message: format!("invalid JSON: {e}"),
                line: Some(e.line()),
                column: Some(e.column()),
            });
            return None;
        }
    };
    let Some(top) = value.as_object() else {
        diag(diags, Severity::Error, "", "an Ignition config is a JSON object ({\"ignition\": {\"version\": \"3.3.0\"}, …})");
        return None;
    };
    let version = match top.get("ignition").and_then(|i| i.as_object()).and_then(|i| i.get("version")) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            diag(diags, Severity::Error, "ignition.version", "must be a string such as \"3.3.0\"");
            return None;
        }
        None => {
            diag(
                diags,
                Severity::Error,
                "ignition.version",
                "missing: an Ignition config says which spec it follows (\"3.0.0\"…\"3.4.0\", or \"2.0.0\"…\"2.4.0\")",
            );
            return None;
        }
    };
    let accepted = "accepted: 3.0.0, 3.1.0, 3.2.0, 3.3.0, 3.4.0, 3.4.0-experimental, 2.0.0–2.4.x";
    let Some((major, minor, _patch, pre)) = parse_version(&version) else {
        diag(diags, Severity::Error, "ignition.version", format!("{version:?} is not a version ({accepted})"));
        return None;
    };
    let mut w = Walker { diags, v3_minor: 0 };
    if let Some(&(_, m, exp)) = V3_VERSIONS.iter().find(|(v, _, _)| *v == version) {
        w.v3_minor = m;
        let mut cfg = w.v3(top);
        cfg.version = version;
        cfg.spec = Some(Spec { major: 3, minor: m, experimental: exp });
        return Some(cfg);
    }
    if major == 2 && minor <= 4 && (pre.is_empty() || pre == "experimental") {
        let mut cfg = w.v2(top);
        cfg.version = version;
        cfg.spec = Some(Spec { major: 2, minor: minor as u8, experimental: !pre.is_empty() });
        return Some(cfg);
    }
    diag(w.diags, Severity::Error, "ignition.version", format!("unsupported config version {version:?} ({accepted})"));
    None
}

struct Walker<'d> {
    diags: &'d mut Vec<Diagnostic>,
    /// The minor version of a 3.x config (which keys exist).
    v3_minor: u8,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Walker<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        diag(self.diags, Severity::Error, path, msg);
    }

    fn warn(&mut self, path: &str, msg: impl Into<String>) {
        diag(self.diags, Severity::Warning, path, msg);
    }

    /// `v` as an object with `keys` (others warned about); null = absent.
    fn object<'v>(&mut self, v: Option<&'v Value>, path: &str, keys: &[&str]) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                for k in m.keys() {
                    if !keys.contains(&k.as_str()) {
                        self.warn(&at(path, k), format!("unknown key {k:?}, ignored (known here: {})", keys.join(", ")));
                    }
                }
                Some(m)
            }
            Some(other) => {
                self.err(path, format!("must be an object, not {}", kind(other)));
                None
            }
        }
    }

    fn string(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(&at(path, key), format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.err(&at(path, key), format!("must be true or false, not {}", kind(other)));
                None
            }
        }
    }

    fn int(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<i64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    self.err(&at(path, key), format!("must be a whole number (64-bit), not {n}"));
                    None
                }
            },
            Some(other) => {
                self.err(&at(path, key), format!("must be a whole number, not {}", kind(other)));
                None
            }
        }
    }

    fn array<'v>(&mut self, m: &'v Map<String, Value>, key: &str, path: &str) -> &'v [Value] {
        match m.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(&at(path, key), format!("must be a list, not {}", kind(other)));
                &[]
            }
        }
    }

    fn strings(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let p = at(path, key);
        let mut out = Vec::new();
        for (i, v) in self.array(m, key, path).iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.clone()),
                // Go decodes null into a string slice as "".
                Value::Null => out.push(String::new()),
                other => self.err(&idx(&p, i), format!("must be a string, not {}", kind(other))),
            }
        }
        out
    }

    /// Objects of a list, with their paths.
    fn objects<'v>(&mut self, m: &'v Map<String, Value>, key: &str, path: &str, keys: &[&str]) -> Vec<(String, &'v Map<String, Value>)> {
        let p = at(path, key);
        let mut out = Vec::new();
        for (i, v) in self.array(m, key, path).iter().enumerate() {
            let ip = idx(&p, i);
            if v.is_null() {
                // Go decodes null into a zero struct.
                static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
                out.push((ip, EMPTY.get_or_init(Map::new)));
                continue;
            }
            if let Some(o) = self.object(Some(v), &ip, keys) {
                out.push((ip, o));
            }
        }
        out
    }

    fn owner(&mut self, m: &Map<String, Value>, key: &str, path: &str, with_name: bool) -> Owner {
        let p = at(path, key);
        let keys: &[&str] = if with_name { &["id", "name"] } else { &["id"] };
        match self.object(m.get(key), &p, keys) {
            Some(o) => Owner { id: self.int(o, "id", &p), name: if with_name { self.string(o, "name", &p) } else { None } },
            None => Owner::default(),
        }
    }

    fn verification(&mut self, m: &Map<String, Value>, path: &str) -> Option<String> {
        let p = at(path, "verification");
        let o = self.object(m.get("verification"), &p, &["hash"])?;
        self.string(o, "hash", &p)
    }

    fn headers(&mut self, m: &Map<String, Value>, path: &str) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (p, h) in self.objects(m, "httpHeaders", path, &["name", "value"]) {
            let name = self.string(h, "name", &p).unwrap_or_default();
            let value = self.string(h, "value", &p);
            out.push((name, value));
        }
        out
    }

    // ---------------------------------------------------------------- 3.x

    /// A 3.x resource (`contents`, `append[]`, `merge[]`, CAs).
    fn resource3(&mut self, v: Option<&Value>, path: &str, with_compression: bool) -> Resource {
        let mut keys = vec!["source", "verification"];
        if with_compression {
            keys.push("compression");
        }
        if self.v3_minor >= 1 {
            keys.push("httpHeaders");
            keys.push("compression");
        }
        let Some(o) = self.object(v, path, &keys) else { return Resource { origin: path.into(), ..Default::default() } };
        Resource {
            origin: path.into(),
            source: self.string(o, "source", path),
            compression: if keys.contains(&"compression") { self.string(o, "compression", path) } else { None },
            hash: self.verification(o, path),
            http_headers: if self.v3_minor >= 1 { self.headers(o, path) } else { Vec::new() },
        }
    }

    fn node3(&mut self, o: &Map<String, Value>, path: &str) -> Node {
        Node {
            origin: path.into(),
            path: self.string(o, "path", path).unwrap_or_default(),
            overwrite: self.boolean(o, "overwrite", path),
            user: self.owner(o, "user", path, true),
            group: self.owner(o, "group", path, true),
        }
    }

    fn v3(&mut self, top: &Map<String, Value>) -> Config {
        let m = self.v3_minor;
        let mut top_keys = vec!["ignition", "passwd", "storage", "systemd"];
        if m >= 3 {
            top_keys.push("kernelArguments");
        }
        let top = self.object(Some(&Value::Object(top.clone())), "", &top_keys).cloned().unwrap_or_default();
        let mut cfg = Config::default();

        let mut ign_keys = vec!["config", "security", "timeouts", "version"];
        if m >= 1 {
            ign_keys.push("proxy");
        }
        if let Some(ign) = self.object(top.get("ignition"), "ignition", &ign_keys) {
            if let Some(c) = self.object(ign.get("config"), "ignition.config", &["merge", "replace"]) {
                let p = "ignition.config.merge";
                for (i, v) in self.array(c, "merge", "ignition.config").iter().enumerate() {
                    let r = self.resource3(Some(v), &idx(p, i), false);
                    cfg.ignition.config.merge.push(r);
                }
                if c.get("replace").is_some_and(|v| !v.is_null()) {
                    cfg.ignition.config.replace = Some(self.resource3(c.get("replace"), "ignition.config.replace", false));
                }
            }
            if let Some(s) = self.object(ign.get("security"), "ignition.security", &["tls"]) {
                if let Some(t) = self.object(s.get("tls"), "ignition.security.tls", &["certificateAuthorities"]) {
                    let p = "ignition.security.tls.certificateAuthorities";
                    for (i, v) in self.array(t, "certificateAuthorities", "ignition.security.tls").iter().enumerate() {
                        let r = self.resource3(Some(v), &idx(p, i), false);
                        cfg.ignition.security.certificate_authorities.push(r);
                    }
                }
            }
            if let Some(t) = self.object(ign.get("timeouts"), "ignition.timeouts", &["httpResponseHeaders", "httpTotal"]) {
                cfg.ignition.timeouts.http_response_headers = self.int(t, "httpResponseHeaders", "ignition.timeouts");
                cfg.ignition.timeouts.http_total = self.int(t, "httpTotal", "ignition.timeouts");
            }
            if m >= 1 {
                if let Some(p) = self.object(ign.get("proxy"), "ignition.proxy", &["httpProxy", "httpsProxy", "noProxy"]) {
                    cfg.ignition.proxy = Proxy {
                        http_proxy: self.string(p, "httpProxy", "ignition.proxy"),
                        https_proxy: self.string(p, "httpsProxy", "ignition.proxy"),
                        no_proxy: self.strings(p, "noProxy", "ignition.proxy"),
                    };
                }
            }
        }

        let mut storage_keys = vec!["directories", "disks", "files", "filesystems", "links", "raid"];
        if m >= 2 {
            storage_keys.push("luks");
        }
        if let Some(st) = self.object(top.get("storage"), "storage", &storage_keys) {
            self.storage3(st, &mut cfg.storage);
        }
        if let Some(sd) = self.object(top.get("systemd"), "systemd", &["units"]) {
            for (p, u) in self.objects(sd, "units", "systemd", &["contents", "dropins", "enabled", "mask", "name"]) {
                let mut unit = Unit {
                    origin: p.clone(),
                    name: self.string(u, "name", &p).unwrap_or_default(),
                    enabled: self.boolean(u, "enabled", &p),
                    mask: self.boolean(u, "mask", &p),
                    contents: self.string(u, "contents", &p),
                    dropins: Vec::new(),
                };
                for (dp, d) in self.objects(u, "dropins", &p, &["contents", "name"]) {
                    unit.dropins.push(Dropin {
                        origin: dp.clone(),
                        name: self.string(d, "name", &dp).unwrap_or_default(),
                        contents: self.string(d, "contents", &dp),
                    });
                }
                cfg.systemd.units.push(unit);
            }
        }
        if let Some(pw) = self.object(top.get("passwd"), "passwd", &["groups", "users"]) {
            let mut ukeys = vec![
                "gecos",
                "groups",
                "homeDir",
                "name",
                "noCreateHome",
                "noLogInit",
                "noUserGroup",
                "passwordHash",
                "primaryGroup",
                "shell",
                "sshAuthorizedKeys",
                "system",
                "uid",
            ];
            let mut gkeys = vec!["gid", "name", "passwordHash", "system"];
            if m >= 2 {
                ukeys.push("shouldExist");
                gkeys.push("shouldExist");
            }
            for (p, u) in self.objects(pw, "users", "passwd", &ukeys) {
                let user = self.user(u, &p, m >= 2);
                cfg.passwd.users.push(user);
            }
            for (p, g) in self.objects(pw, "groups", "passwd", &gkeys) {
                cfg.passwd.groups.push(Group {
                    origin: p.clone(),
                    name: self.string(g, "name", &p).unwrap_or_default(),
                    gid: self.int(g, "gid", &p),
                    password_hash: self.string(g, "passwordHash", &p),
                    system: self.boolean(g, "system", &p),
                    should_exist: if m >= 2 { self.boolean(g, "shouldExist", &p) } else { None },
                });
            }
        }
        if m >= 3 {
            if let Some(k) = self.object(top.get("kernelArguments"), "kernelArguments", &["shouldExist", "shouldNotExist"]) {
                cfg.kernel_arguments.should_exist = self.strings(k, "shouldExist", "kernelArguments");
                cfg.kernel_arguments.should_not_exist = self.strings(k, "shouldNotExist", "kernelArguments");
            }
        }
        cfg
    }

    fn user(&mut self, u: &Map<String, Value>, p: &str, should_exist: bool) -> User {
        User {
            origin: p.into(),
            name: self.string(u, "name", p).unwrap_or_default(),
            uid: self.int(u, "uid", p),
            password_hash: self.string(u, "passwordHash", p),
            ssh_authorized_keys: self.strings(u, "sshAuthorizedKeys", p),
            gecos: self.string(u, "gecos", p),
            home_dir: self.string(u, "homeDir", p),
            no_create_home: self.boolean(u, "noCreateHome", p),
            primary_group: self.string(u, "primaryGroup", p),
            groups: self.strings(u, "groups", p),
            no_user_group: self.boolean(u, "noUserGroup", p),
            no_log_init: self.boolean(u, "noLogInit", p),
            shell: self.string(u, "shell", p),
            system: self.boolean(u, "system", p),
            should_exist: if should_exist { self.boolean(u, "shouldExist", p) } else { None },
        }
    }

    fn storage3(&mut self, st: &Map<String, Value>, out: &mut Storage) {
        let m = self.v3_minor;
        let node_keys = ["group", "overwrite", "path", "user"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> { node_keys.iter().chain(extra).copied().collect() };
        for (p, f) in self.objects(st, "files", "storage", &with(&["append", "contents", "mode"])) {
            let node = self.node3(f, &p);
            let contents = self.resource3(f.get("contents"), &at(&p, "contents"), true);
            let mut append = Vec::new();
            let ap = at(&p, "append");
            for (i, v) in self.array(f, "append", &p).iter().enumerate() {
                append.push(self.resource3(Some(v), &idx(&ap, i), true));
            }
            out.files.push(File { node, mode: self.int(f, "mode", &p), contents, append });
        }
        for (p, d) in self.objects(st, "directories", "storage", &with(&["mode"])) {
            out.directories.push(Directory { node: self.node3(d, &p), mode: self.int(d, "mode", &p) });
        }
        for (p, l) in self.objects(st, "links", "storage", &with(&["hard", "target"])) {
            out.links.push(Link { node: self.node3(l, &p), target: self.string(l, "target", &p), hard: self.boolean(l, "hard", &p) });
        }
        let mut fs_keys = vec!["device", "format", "label", "options", "path", "uuid", "wipeFilesystem"];
        if m >= 1 {
            fs_keys.push("mountOptions");
        }
        for (p, f) in self.objects(st, "filesystems", "storage", &fs_keys) {
            out.filesystems.push(Filesystem {
                origin: p.clone(),
                device: self.string(f, "device", &p).unwrap_or_default(),
                format: self.string(f, "format", &p),
                path: self.string(f, "path", &p),
                label: self.string(f, "label", &p),
                uuid: self.string(f, "uuid", &p),
                wipe_filesystem: self.boolean(f, "wipeFilesystem", &p),
                options: self.strings(f, "options", &p),
                mount_options: if m >= 1 { self.strings(f, "mountOptions", &p) } else { Vec::new() },
                name: None,
            });
        }
        let mut part_keys = vec!["guid", "label", "number", "shouldExist", "sizeMiB", "startMiB", "typeGuid", "wipePartitionEntry"];
        if m >= 2 {
            part_keys.push("resize");
        }
        for (p, d) in self.objects(st, "disks", "storage", &["device", "partitions", "wipeTable"]) {
            let parts = self.objects(d, "partitions", &p, &part_keys);
            for (pp, part) in &parts {
                for k in ["label", "guid", "typeGuid"] {
                    self.string(part, k, pp);
                }
                for k in ["number", "sizeMiB", "startMiB"] {
                    self.int(part, k, pp);
                }
                for k in ["shouldExist", "wipePartitionEntry", "resize"] {
                    self.boolean(part, k, pp);
                }
            }
            out.disks.push(Disk {
                origin: p.clone(),
                device: self.string(d, "device", &p).unwrap_or_default(),
                wipe_table: self.boolean(d, "wipeTable", &p),
                partitions: parts.len(),
            });
        }
        for (p, r) in self.objects(st, "raid", "storage", &["devices", "level", "name", "options", "spares"]) {
            self.int(r, "spares", &p);
            self.strings(r, "options", &p);
            out.raid.push(Raid {
                origin: p.clone(),
                name: self.string(r, "name", &p).unwrap_or_default(),
                level: self.string(r, "level", &p),
                devices: self.strings(r, "devices", &p),
            });
        }
        if m >= 2 {
            let mut luks_keys = vec!["clevis", "device", "keyFile", "label", "name", "options", "uuid", "wipeVolume"];
            if m >= 4 {
                luks_keys.extend(["discard", "openOptions"]);
            }
            for (p, l) in self.objects(st, "luks", "storage", &luks_keys) {
                self.resource3(l.get("keyFile"), &at(&p, "keyFile"), true);
                let cp = at(&p, "clevis");
                if let Some(c) = self.object(l.get("clevis"), &cp, &["custom", "tang", "threshold", "tpm2"]) {
                    self.object(c.get("custom"), &at(&cp, "custom"), &["config", "needsNetwork", "pin"]);
                    let tang_keys: &[&str] = if m >= 4 { &["thumbprint", "url", "advertisement"] } else { &["thumbprint", "url"] };
                    self.objects(c, "tang", &cp, tang_keys);
                }
                out.luks.push(Luks {
                    origin: p.clone(),
                    name: self.string(l, "name", &p).unwrap_or_default(),
                    device: self.string(l, "device", &p),
                });
            }
        }
    }

    // ---------------------------------------------------------------- 2.x

    fn resource2(&mut self, v: Option<&Value>, path: &str) -> Resource {
        let Some(o) = self.object(v, path, &["compression", "httpHeaders", "source", "verification"]) else {
            return Resource { origin: path.into(), ..Default::default() };
        };
        Resource {
            origin: path.into(),
            source: self.string(o, "source", path),
            compression: self.string(o, "compression", path).filter(|c| !c.is_empty()),
            hash: self.verification(o, path),
            http_headers: self.headers(o, path),
        }
    }

    /// A 2.x node: only the `"root"` filesystem exists here.
    fn node2(&mut self, o: &Map<String, Value>, path: &str) -> Node {
        let fs = self.string(o, "filesystem", path).unwrap_or_default();
        if fs != "root" {
            self.err(
                &at(path, "filesystem"),
                format!("{fs:?}: only the \"root\" filesystem is supported (spec 2.x files, directories and links name the filesystem they are on; ign-converter has the same rule)"),
            );
        }
        let raw = self.string(o, "path", path).unwrap_or_default();
        // ign-converter joins the filesystem's mount point ("/") and the path.
        let path_v = if raw.is_empty() {
            raw
        } else if !raw.starts_with('/') {
            self.err(&at(path, "path"), format!("{raw:?} is not an absolute path"));
            raw
        } else {
            clean_path(&raw)
        };
        Node {
            origin: path.into(),
            path: path_v,
            overwrite: self.boolean(o, "overwrite", path),
            user: self.owner(o, "user", path, true),
            group: self.owner(o, "group", path, true),
        }
    }

    fn v2(&mut self, top: &Map<String, Value>) -> Config {
        let top = self
            .object(Some(&Value::Object(top.clone())), "", &["ignition", "networkd", "passwd", "storage", "systemd"])
            .cloned()
            .unwrap_or_default();
        let mut cfg = Config::default();
        if let Some(ign) = self.object(top.get("ignition"), "ignition", &["config", "proxy", "security", "timeouts", "version"]) {
            if let Some(c) = self.object(ign.get("config"), "ignition.config", &["append", "replace"]) {
                let p = "ignition.config.append";
                for (i, v) in self.array(c, "append", "ignition.config").iter().enumerate() {
                    let r = self.resource2(Some(v), &idx(p, i));
                    cfg.ignition.config.merge.push(r);
                }
                if c.get("replace").is_some_and(|v| !v.is_null()) {
                    cfg.ignition.config.replace = Some(self.resource2(c.get("replace"), "ignition.config.replace"));
                }
            }
            if let Some(s) = self.object(ign.get("security"), "ignition.security", &["tls"]) {
                if let Some(t) = self.object(s.get("tls"), "ignition.security.tls", &["certificateAuthorities"]) {
                    let p = "ignition.security.tls.certificateAuthorities";
                    for (i, v) in self.array(t, "certificateAuthorities", "ignition.security.tls").iter().enumerate() {
                        let r = self.resource2(Some(v), &idx(p, i));
                        cfg.ignition.security.certificate_authorities.push(r);
                    }
                }
            }
            if let Some(t) = self.object(ign.get("timeouts"), "ignition.timeouts", &["httpResponseHeaders", "httpTotal"]) {
                cfg.ignition.timeouts.http_response_headers = self.int(t, "httpResponseHeaders", "ignition.timeouts");
                cfg.ignition.timeouts.http_total = self.int(t, "httpTotal", "ignition.timeouts");
            }
            if let Some(p) = self.object(ign.get("proxy"), "ignition.proxy", &["httpProxy", "httpsProxy", "noProxy"]) {
                cfg.ignition.proxy = Proxy {
                    http_proxy: self.string(p, "httpProxy", "ignition.proxy").filter(|s| !s.is_empty()),
                    https_proxy: self.string(p, "httpsProxy", "ignition.proxy").filter(|s| !s.is_empty()),
                    no_proxy: self.strings(p, "noProxy", "ignition.proxy"),
                };
            }
        }
        if let Some(st) = self.object(top.get("storage"), "storage", &["directories", "disks", "files", "filesystems", "links", "raid"]) {
            let node_keys = ["filesystem", "group", "overwrite", "path", "user"];
            let with = |extra: &[&'static str]| -> Vec<&'static str> { node_keys.iter().chain(extra).copied().collect() };
            for (p, f) in self.objects(st, "files", "storage", &with(&["append", "contents", "mode"])) {
                let mut node = self.node2(f, &p);
                let mut contents = self.resource2(f.get("contents"), &at(&p, "contents"));
                // 2.x `source` is a plain string: absent means "".
                contents.source.get_or_insert_with(String::new);
                let append = self.boolean(f, "append", &p).unwrap_or(false);
                if node.overwrite.is_none() {
                    node.overwrite = Some(true);
                }
                let mut file = File { node, mode: self.int(f, "mode", &p), contents: Resource::default(), append: Vec::new() };
                if append {
                    file.node.overwrite = Some(false);
                    file.contents.origin = contents.origin.clone();
                    file.append.push(contents);
                } else {
                    file.contents = contents;
                }
                cfg.storage.files.push(file);
            }
            for (p, d) in self.objects(st, "directories", "storage", &with(&["mode"])) {
                let node = self.node2(d, &p);
                cfg.storage.directories.push(Directory { node, mode: self.int(d, "mode", &p) });
            }
            for (p, l) in self.objects(st, "links", "storage", &with(&["hard", "target"])) {
                let node = self.node2(l, &p);
                let target = self.string(l, "target", &p);
                let hard = self.boolean(l, "hard", &p).filter(|h| *h);
                cfg.storage.links.push(Link { node, target, hard });
            }
            for (p, f) in self.objects(st, "filesystems", "storage", &["mount", "name", "path"]) {
                let mut fs = Filesystem {
                    origin: p.clone(),
                    name: self.string(f, "name", &p),
                    path: self.string(f, "path", &p),
                    ..Default::default()
                };
                let mp = at(&p, "mount");
                if let Some(mnt) =
                    self.object(f.get("mount"), &mp, &["create", "device", "format", "label", "options", "uuid", "wipeFilesystem"])
                {
                    fs.device = self.string(mnt, "device", &mp).unwrap_or_default();
                    fs.format = self.string(mnt, "format", &mp);
                    fs.label = self.string(mnt, "label", &mp);
                    fs.uuid = self.string(mnt, "uuid", &mp);
                    fs.wipe_filesystem = self.boolean(mnt, "wipeFilesystem", &mp);
                    let cp = at(&mp, "create");
                    if let Some(c) = self.object(mnt.get("create"), &cp, &["force", "options"]) {
                        if self.boolean(c, "force", &cp) == Some(true) {
                            fs.wipe_filesystem = Some(true);
                        }
                        fs.options = self.strings(c, "options", &cp);
                    }
                    fs.options.extend(self.strings(mnt, "options", &mp));
                    if fs.device.is_empty() {
                        self.err(
                            &at(&mp, "device"),
                            "a filesystem's mount needs a device (an absolute path such as /dev/disk/by-label/ROOT)",
                        );
                    }
                } else if fs.path.is_none() {
                    self.err(&p, "a spec 2.x filesystem needs either \"mount\" or \"path\"");
                }
                cfg.storage.filesystems.push(fs);
            }
            for (p, d) in self.objects(st, "disks", "storage", &["device", "partitions", "wipeTable"]) {
                let parts = self.objects(
                    d,
                    "partitions",
                    &p,
                    &["guid", "label", "number", "shouldExist", "size", "sizeMiB", "start", "startMiB", "typeGuid", "wipePartitionEntry"],
                );
                cfg.storage.disks.push(Disk {
                    origin: p.clone(),
                    device: self.string(d, "device", &p).unwrap_or_default(),
                    wipe_table: self.boolean(d, "wipeTable", &p),
                    partitions: parts.len(),
                });
            }
            for (p, r) in self.objects(st, "raid", "storage", &["devices", "level", "name", "options", "spares"]) {
                cfg.storage.raid.push(Raid {
                    origin: p.clone(),
                    name: self.string(r, "name", &p).unwrap_or_default(),
                    level: self.string(r, "level", &p),
                    devices: self.strings(r, "devices", &p),
                });
            }
        }
        if let Some(sd) = self.object(top.get("systemd"), "systemd", &["units"]) {
            for (p, u) in self.objects(sd, "units", "systemd", &["contents", "dropins", "enable", "enabled", "mask", "name"]) {
                let enable = self.boolean(u, "enable", &p).unwrap_or(false);
                let enabled_v = self.boolean(u, "enabled", &p);
                let enabled = match enabled_v {
                    Some(false) => Some(false),
                    Some(true) => Some(true),
                    None if enable => Some(true),
                    None => None,
                };
                let mut unit = Unit {
                    origin: p.clone(),
                    name: self.string(u, "name", &p).unwrap_or_default(),
                    enabled,
                    mask: self.boolean(u, "mask", &p).filter(|m| *m),
                    contents: self.string(u, "contents", &p).filter(|c| !c.is_empty()),
                    dropins: Vec::new(),
                };
                for (dp, d) in self.objects(u, "dropins", &p, &["contents", "name"]) {
                    let contents = self.string(d, "contents", &dp).filter(|c| !c.is_empty());
                    unit.dropins.push(Dropin { origin: dp.clone(), name: self.string(d, "name", &dp).unwrap_or_default(), contents });
                }
                cfg.systemd.units.push(unit);
            }
        }
        if let Some(nd) = self.object(top.get("networkd"), "networkd", &["units"]) {
            for (p, u) in self.objects(nd, "units", "networkd", &["contents", "dropins", "name"]) {
                let name = self.string(u, "name", &p).unwrap_or_default();
                let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
                if !matches!(ext, "link" | "netdev" | "network") {
                    self.err(&at(&p, "name"), format!("{name:?}: a networkd unit name ends in .network, .netdev or .link"));
                }
                if name.contains('/') {
                    self.err(&at(&p, "name"), format!("{name:?}: a unit name cannot contain '/'"));
                }
                if let Some(c) = self.string(u, "contents", &p) {
                    cfg.storage.files.push(inline_file(&p, &format!("/etc/systemd/network/{name}"), &c));
                }
                for (dp, d) in self.objects(u, "dropins", &p, &["contents", "name"]) {
                    let dn = self.string(d, "name", &dp).unwrap_or_default();
                    if !dn.ends_with(".conf") || dn.contains('/') {
                        self.err(&at(&dp, "name"), format!("{dn:?}: a drop-in name ends in .conf and has no '/'"));
                    }
                    let c = self.string(d, "contents", &dp).unwrap_or_default();
                    cfg.storage.files.push(inline_file(&dp, &format!("/etc/systemd/network/{name}.d/{dn}"), &c));
                }
            }
        }
        if let Some(pw) = self.object(top.get("passwd"), "passwd", &["groups", "users"]) {
            let ukeys = [
                "create",
                "gecos",
                "groups",
                "homeDir",
                "name",
                "noCreateHome",
                "noLogInit",
                "noUserGroup",
                "passwordHash",
                "primaryGroup",
                "shell",
                "sshAuthorizedKeys",
                "system",
                "uid",
            ];
            for (p, u) in self.objects(pw, "users", "passwd", &ukeys) {
                let mut user = self.user(u, &p, false);
                for s in [&mut user.gecos, &mut user.home_dir, &mut user.primary_group, &mut user.shell] {
                    if s.as_deref() == Some("") {
                        *s = None;
                    }
                }
                let cp = at(&p, "create");
                let ck =
                    ["gecos", "groups", "homeDir", "noCreateHome", "noLogInit", "noUserGroup", "primaryGroup", "shell", "system", "uid"];
                if let Some(c) = self.object(u.get("create"), &cp, &ck) {
                    self.warn(&cp, "deprecated in spec 2.1: its fields are read as the user's own");
                    let c = self.user(c, &cp, false);
                    user.uid = user.uid.or(c.uid);
                    user.gecos = user.gecos.or(c.gecos.filter(|s| !s.is_empty()));
                    user.home_dir = user.home_dir.or(c.home_dir.filter(|s| !s.is_empty()));
                    user.no_create_home = user.no_create_home.or(c.no_create_home);
                    user.primary_group = user.primary_group.or(c.primary_group.filter(|s| !s.is_empty()));
                    if user.groups.is_empty() {
                        user.groups = c.groups;
                    }
                    user.no_user_group = user.no_user_group.or(c.no_user_group);
                    user.no_log_init = user.no_log_init.or(c.no_log_init);
                    user.shell = user.shell.or(c.shell.filter(|s| !s.is_empty()));
                    user.system = user.system.or(c.system);
                }
                for b in [&mut user.no_create_home, &mut user.no_user_group, &mut user.no_log_init, &mut user.system] {
                    if *b == Some(false) {
                        *b = None;
                    }
                }
                cfg.passwd.users.push(user);
            }
            for (p, g) in self.objects(pw, "groups", "passwd", &["gid", "name", "passwordHash", "system"]) {
                cfg.passwd.groups.push(Group {
                    origin: p.clone(),
                    name: self.string(g, "name", &p).unwrap_or_default(),
                    gid: self.int(g, "gid", &p),
                    password_hash: self.string(g, "passwordHash", &p).filter(|h| !h.is_empty()),
                    system: self.boolean(g, "system", &p).filter(|s| *s),
                    should_exist: None,
                });
            }
        }
        cfg
    }
}

/// A file written from inline text (2.x networkd units): mode 0644, replaced.
fn inline_file(origin: &str, path: &str, contents: &str) -> File {
    File {
        node: Node { origin: origin.into(), path: path.into(), overwrite: Some(true), ..Default::default() },
        mode: Some(0o644),
        contents: Resource { origin: at(origin, "contents"), source: Some(content::data_url(contents.as_bytes())), ..Default::default() },
        append: Vec::new(),
    }
}

/// Go's `path.Clean`.
pub(super) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}
