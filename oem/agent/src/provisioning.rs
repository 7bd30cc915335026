//! First-boot provisioning from `user_data` (root mode, on `/sysroot`,
//! before the root switch), with the `provision` crate:
//!
//! * **Ignition** runs on the **first boot** only, as on Fedora CoreOS and
//!   Flatcar: the first boot is when the root's `/etc/machine-id` is
//!   `uninitialized`, empty or missing (what the builder leaves in Debian
//!   roots, and what makes systemd apply presets, so the units Ignition
//!   enables through `/etc/systemd/system-preset/20-ignition.preset` are
//!   enabled by systemd on that same boot). The config is checked whole
//!   before anything is written ([`provision::ignition::check`]: Ignition's
//!   rules plus what this image refuses, every `data:` URL decoded); an
//!   invalid config, a refused field or a failed step **stops the boot**
//!   with the JSON path on the console, as Ignition does: [`run`] returns
//!   the failure and the agent's emergency path takes over, no root
//!   switch.
//! * `storage.filesystems`: an entry that names the running root (its
//!   device by path or `/dev/disk/by-{label,partlabel,uuid,partuuid}`, the
//!   CoreOS root labels `ROOT`/`root`, spec 2.x's filesystem `"root"`, or
//!   `path: "/"`) is **kept**, never wiped: when its `format` is the
//!   root's type the agent logs that the root already matches (the seed's
//!   2.0.0 example formats `ROOT` as Btrfs with `force`); another format
//!   stops the boot. Any other device is a **data disk**: found as the
//!   root is found (there is no udev yet: `/dev/NAME` or
//!   `/dev/disk/by-{label,uuid,partlabel,partuuid}/`, waited for up to
//!   30 s); a filesystem already there that matches `format` (and `label`
//!   and `uuid` when given) is reused unless `wipeFilesystem` is true,
//!   one that does not match stops the boot, as Ignition's does; else an
//!   empty filesystem is written by the builder's own writers
//!   ([`crate::datafs`]). With a `path`, it is mounted at `/sysroot/PATH`
//!   for the files stage, unmounted after it, and a `.mount` unit
//!   (`/etc/systemd/system/ESCAPED-PATH.mount`, by UUID, wanted by
//!   `local-fs.target`) mounts it on every boot: Ignition runs on the
//!   first boot only, so a later boot never formats it again.
//! * **cloud-config** ([`provision::cloudconfig`], CoreOS dialect) is
//!   applied on **every boot**, as coreos-cloudinit does (its per-instance
//!   parts only on the first): files, users, units, the etcd drop-in go
//!   into the root now; a broken document or a failed step is logged with
//!   its path and the boot goes on. What must run on the booted system is
//!   handed to systemd as runtime units in `/run/systemd/system` (moved
//!   into the root with `/run`): `bootcmd` in `agent-bootcmd.service`
//!   (before `sysinit.target`), the units' `command`s and `runcmd` in
//!   `agent-cloud-config.service` (after `multi-user.target`'s network is
//!   up), each command on its own `ExecStart=-` line, so one failing does
//!   not stop the next, as coreos-cloudinit went on.
//! * A **`#!` script** runs once per instance, as cloud-init's
//!   `scripts-user` runs it: on the first boot only, when the system is up
//!   (after `network-online.target` and `multi-user.target`). The agent
//!   copies it into the root as `/var/lib/agent/user-data.script` (mode
//!   0700, so its interpreter line works whatever the mount options of
//!   `/run`) and hands systemd a runtime unit,
//!   `agent-user-script.service`, whose output goes to the journal and
//!   the console. A root without systemd (an appliance) does not run it,
//!   and says so.
//! * **Empty** user_data: nothing to do. Any other kind is logged by name
//!   and left alone.
//!
//! What was done goes to `/run/agent/provisioning.json` (kind, source,
//! first boot or not, each step with its JSON path, warnings, errors),
//! which moves into the root with `/run`.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use provision::userdata::{self, Kind};
use provision::{cloudconfig, ignition};
use serde_json::{json, Value};

use crate::log;

/// The record for the OS and for `inspect`.
pub const RECORD: &str = "/run/agent/provisioning.json";

/// The running root, as far as `storage.filesystems` entries are matched
/// against it.
#[derive(Debug, Clone, Default)]
pub struct RootFs {
    /// The block device (`/dev/vda3`).
    pub device: String,
    /// `ext4`, `btrfs`, …
    pub fstype: String,
    pub label: String,
    pub uuid: String,
    pub partlabel: String,
    pub partuuid: String,
}

/// Whether `root/etc/machine-id` says this is the first boot.
pub fn first_boot(root: &Path) -> bool {
    match fs::read_to_string(root.join("etc/machine-id")) {
        Ok(s) => matches!(s.trim(), "" | "uninitialized"),
        Err(_) => true,
    }
}

/// Days since 1970-01-01 by the clock (shadow's "last change").
fn today() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| (d.as_secs() / 86_400) as i64).unwrap_or(0)
}

/// Whether a `storage.filesystems` entry names the running root.
pub fn names_root(f: &ignition::Filesystem, root: &RootFs) -> bool {
    if f.name.as_deref() == Some("root") || matches!(f.path.as_deref(), Some("/") | Some("/sysroot")) {
        return true;
    }
    let d = f.device.as_str();
    let eq = |a: &str, b: &str| !b.is_empty() && a.eq_ignore_ascii_case(b);
    if !root.device.is_empty() && d == root.device {
        return true;
    }
    if let Some(l) = d.strip_prefix("/dev/disk/by-label/") {
        return eq(l, &root.label) || l == "ROOT" || l == "root";
    }
    if let Some(l) = d.strip_prefix("/dev/disk/by-partlabel/") {
        return eq(l, &root.partlabel);
    }
    if let Some(u) = d.strip_prefix("/dev/disk/by-uuid/") {
        return eq(u, &root.uuid);
    }
    if let Some(u) = d.strip_prefix("/dev/disk/by-partuuid/") {
        return eq(u, &root.partuuid);
    }
    false
}

/// Run the provisioning step on `root` (see the module docs). `Err` is a
/// message for the console: the boot must stop.
pub fn run(root: &Path, root_fs: &RootFs, oem_user: &str, hostname: Option<&str>) -> Result<(), String> {
    let data = fs::read(crate::cloud::USER_DATA).ok();
    let source = fs::read_to_string(crate::cloud::USER_DATA_SOURCE).unwrap_or_else(|_| "none".into());
    let kind = data.as_deref().map(userdata::detect).unwrap_or(Kind::Empty);
    let first = first_boot(root);
    let mut rec = json!({
        "kind": kind.name(),
        "source": source,
        "bytes": data.as_ref().map(Vec::len).unwrap_or(0),
        "first_boot": first,
        "steps": [],
        "warnings": [],
        "errors": [],
    });
    let result = match (&kind, data.as_deref()) {
        (Kind::Ignition, Some(d)) if first => run_ignition(root, root_fs, d, &mut rec),
        (Kind::Ignition, _) => {
            log!("provisioning: Ignition config from the {source}: not the first boot (machine-id is set): Ignition ran on the first boot");
            rec["skipped"] = json!("not the first boot");
            Ok(())
        }
        (Kind::CloudConfig, Some(d)) => {
            run_cloudconfig(root, d, first, oem_user, hostname, &source, &mut rec);
            Ok(())
        }
        (Kind::Script, Some(d)) if first => {
            run_script(root, d, &source, &mut rec);
            Ok(())
        }
        (Kind::Script, _) => {
            log!("provisioning: #! script from the {source}: not the first boot (machine-id is set): it ran on the first boot");
            rec["skipped"] = json!("not the first boot");
            Ok(())
        }
        (Kind::Empty, _) => {
            if data.is_some() {
                log!("provisioning: user_data from the {source} is empty: nothing to do");
            }
            Ok(())
        }
        (k, _) => {
            log!("provisioning: user_data from the {source} is {}: not applied by this image", k.name());
            rec["skipped"] = json!(format!("{} is not applied by this image", k.name()));
            Ok(())
        }
    };
    if let Err(e) = &result {
        rec["errors"].as_array_mut().expect("array").push(json!(e));
    }
    write_record(&rec);
    result
}

fn write_record(rec: &Value) {
    let text = serde_json::to_string_pretty(rec).unwrap_or_default() + "\n";
    if let Err(e) = fs::create_dir_all("/run/agent").and_then(|_| fs::write(RECORD, text)) {
        log!("provisioning: writing {RECORD} failed: {e}");
    }
}

fn diag_text(d: &ignition::Diagnostic) -> String {
    let at = if d.path.is_empty() { "the config".to_string() } else { d.path.clone() };
    match (d.line, d.column) {
        (Some(l), Some(c)) => format!("{at} (line {l}, column {c}): {}", d.message),
        _ => format!("{at}: {}", d.message),
    }
}

/// Ignition on the first boot: check, root filesystem rule, apply.
fn run_ignition(root: &Path, root_fs: &RootFs, data: &[u8], rec: &mut Value) -> Result<(), String> {
    let t = std::time::Instant::now();
    let parsed = match ignition::check(data) {
        Ok(p) => p,
        Err(e) => {
            let errors: Vec<String> = e.errors().map(diag_text).collect();
            for line in &errors {
                log!("provisioning: ignition: ERROR {line}");
            }
            rec["errors"] = json!(errors);
            return Err(format!(
                "Ignition: the config is not valid ({}); the boot stops here, as Ignition's does",
                errors.first().cloned().unwrap_or_else(|| "no details".into())
            ));
        }
    };
    let cfg = parsed.config;
    log!("provisioning: ignition: config version {} from the user_data, checked", cfg.version);
    let warnings: Vec<String> = parsed.warnings.iter().map(diag_text).collect();
    for w in &warnings {
        log!("provisioning: ignition: warning {w}");
    }
    rec["warnings"] = json!(warnings);
    rec["version"] = json!(cfg.version);
    let mut steps = Vec::new();
    let mut mounted = Vec::new();
    for (i, f) in cfg.storage.filesystems.iter().enumerate() {
        let at = if f.origin.is_empty() { format!("storage.filesystems[{i}]") } else { f.origin.clone() };
        if names_root(f, root_fs) {
            let format = f.format.as_deref().unwrap_or("");
            if format.is_empty() || format == "none" || format == root_fs.fstype {
                log!(
                    "provisioning: ignition: {at} ({}) is the running root, which is already {}: kept as it is, never wiped",
                    f.device,
                    root_fs.fstype
                );
                steps.push(json!({"action": "root filesystem kept", "target": f.device, "from": at}));
            } else {
                return Err(format!(
                    "Ignition: {at}: asks to format the running root ({}) as {format}, but it is {} and holds the OS: this image never wipes its root",
                    f.device, root_fs.fstype
                ));
            }
        } else {
            let r = data_filesystem(root, f, &at, &mut steps, &mut mounted);
            if let Err(e) = r {
                unmount_all(&mounted);
                return Err(format!("Ignition: {at}: {e}; the boot stops here"));
            }
        }
    }
    let applied = ignition::apply(root, &cfg, &ignition::ApplyOptions { day: today() });
    unmount_all(&mounted);
    let report = applied.map_err(|e| format!("Ignition: applying the config failed: {e}; the boot stops here"))?;
    for s in &report.steps {
        log!("provisioning: ignition: {} {} ({})", s.action, s.target, s.from);
    }
    steps.extend(report.steps.iter().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)));
    rec["steps"] = json!(steps);
    log!("provisioning: ignition: files stage done in {} ms: {} step(s)", t.elapsed().as_millis(), report.steps.len());
    Ok(())
}

/// How long a data disk named by Ignition is waited for.
const DATA_DISK_WAIT_SECS: u32 = 30;

/// A `storage.filesystems` entry on a data disk (see the module docs):
/// reuse or format, then mount at `/sysroot/PATH` and write its `.mount`
/// unit.
fn data_filesystem(
    root: &Path,
    f: &ignition::Filesystem,
    at: &str,
    steps: &mut Vec<Value>,
    mounted: &mut Vec<std::path::PathBuf>,
) -> Result<(), String> {
    let format = f.format.as_deref().filter(|x| !x.is_empty() && *x != "none");
    let (dev, found) = crate::boot::find_device(&f.device, DATA_DISK_WAIT_SECS)?;
    let shown = dev.display().to_string();
    let mut info = found;
    if let Some(format) = format {
        let label = f.label.as_deref().unwrap_or("");
        let matches = info.as_ref().is_some_and(|i| {
            i.fstype == format
                && f.label.as_deref().is_none_or(|l| l == i.label)
                && f.uuid.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(&i.uuid))
        });
        if matches && f.wipe_filesystem != Some(true) {
            log!(
                "provisioning: ignition: {at}: {} on {shown} already is {format} (label {label:?}): reused, as wipeFilesystem is not set",
                f.device
            );
            steps.push(json!({"action": "filesystem reused", "target": f.device, "device": shown, "format": format, "from": at}));
        } else {
            if let (Some(i), false) = (&info, f.wipe_filesystem == Some(true)) {
                return Err(format!(
                    "{shown} holds a {} filesystem (label {:?}, uuid {}) that does not match the entry: set wipeFilesystem to true to replace it",
                    i.fstype, i.label, i.uuid
                ));
            }
            let uuid = match f.uuid.as_deref() {
                Some(u) => imagefs::Uuid::parse_str(u).map_err(|e| format!("uuid {u:?}: {e}"))?,
                None => random_uuid()?,
            };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let t = std::time::Instant::now();
            let r = crate::datafs::format(&dev, format, label, uuid, now)?;
            log!(
                "provisioning: ignition: {at}: {} ({shown}) formatted as {format}, label {label:?}, in {} ms{}",
                f.device,
                t.elapsed().as_millis(),
                if r.notes.is_empty() { String::new() } else { format!(" ({})", r.notes.join("; ")) }
            );
            steps.push(
                json!({"action": "filesystem created", "target": f.device, "device": shown, "format": format, "label": label, "from": at}),
            );
            info = crate::boot::find_device(&shown, 0)?.1;
        }
    }
    let Some(path) = f.path.as_deref().filter(|p| !p.is_empty()) else { return Ok(()) };
    let Some(info) = info else {
        return Err(format!("{shown} has no filesystem to mount at {path} (format is none)"));
    };
    let target = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(&target).map_err(|e| format!("creating the mount point {path}: {e}"))?;
    let (flags, data) = mount_flags(&f.mount_options);
    let c = std::ffi::CString::new(data).map_err(|_| "mountOptions hold a NUL byte".to_string())?;
    rustix::mount::mount(&dev, &target, info.fstype, flags, Some(c.as_c_str())).map_err(|e| {
        let hint = if e == rustix::io::Errno::NODEV {
            format!(": the kernel has no {} driver loaded (add it to the recipe's kernel.modules)", info.fstype)
        } else {
            String::new()
        };
        format!("mounting {shown} ({}) at {path} for the files stage: {}{hint}", info.fstype, std::io::Error::from(e))
    })?;
    mounted.push(target);
    let uuid = if info.fstype == "vfat" { info.uuid.to_ascii_uppercase() } else { info.uuid.clone() };
    let name = mount_unit_name(path);
    let unit = mount_unit(&uuid, path, info.fstype, &f.mount_options);
    let dir = root.join("etc/systemd/system");
    let wants = dir.join("local-fs.target.wants");
    fs::create_dir_all(&wants)
        .and_then(|_| fs::write(dir.join(&name), unit))
        .and_then(|_| {
            let _ = fs::remove_file(wants.join(&name));
            std::os::unix::fs::symlink(format!("../{name}"), wants.join(&name))
        })
        .map_err(|e| format!("writing /etc/systemd/system/{name}: {e}"))?;
    log!("provisioning: ignition: {at}: mounted at {path} for the files stage; /etc/systemd/system/{name} mounts it by UUID {uuid} on every boot");
    steps.push(json!({"action": "mount unit", "target": format!("/etc/systemd/system/{name}"), "what": format!("/dev/disk/by-uuid/{uuid}"), "from": at}));
    Ok(())
}

/// A fresh filesystem UUID from the kernel's generator.
fn random_uuid() -> Result<imagefs::Uuid, String> {
    let s = fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(|e| format!("reading /proc/sys/kernel/random/uuid: {e}"))?;
    imagefs::Uuid::parse_str(s.trim()).map_err(|e| format!("the kernel's uuid {s:?}: {e}"))
}

fn unmount_all(mounted: &[std::path::PathBuf]) {
    for m in mounted.iter().rev() {
        if let Err(e) = rustix::mount::unmount(m, rustix::mount::UnmountFlags::empty()) {
            log!("provisioning: ignition: unmounting {} after the files stage: {}", m.display(), std::io::Error::from(e));
        }
    }
}

/// `mountOptions` as mount(2) takes them: the generic flags, and the rest
/// as the filesystem's data string.
pub fn mount_flags(opts: &[String]) -> (rustix::mount::MountFlags, String) {
    use rustix::mount::MountFlags as F;
    let mut flags = F::empty();
    let mut data = Vec::new();
    for o in opts.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= F::RDONLY,
            "rw" | "defaults" | "auto" | "nofail" | "_netdev" => {}
            "nosuid" => flags |= F::NOSUID,
            "nodev" => flags |= F::NODEV,
            "noexec" => flags |= F::NOEXEC,
            "sync" => flags |= F::SYNCHRONOUS,
            "noatime" => flags |= F::NOATIME,
            "nodiratime" => flags |= F::NODIRATIME,
            "relatime" => flags |= F::RELATIME,
            other if other.starts_with("x-") => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

/// systemd's unit name for a mount point (`systemd-escape --path --suffix=mount`).
pub fn mount_unit_name(path: &str) -> String {
    let trimmed: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    let joined = trimmed.join("/");
    let mut out = String::new();
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out + ".mount"
}

/// The `.mount` unit for a data filesystem Ignition made.
pub fn mount_unit(uuid: &str, path: &str, fstype: &str, opts: &[String]) -> String {
    let options = if opts.is_empty() { String::new() } else { format!("Options={}\n", opts.join(",")) };
    format!(
        "# Written by the guest agent from Ignition's storage.filesystems (first boot).\n[Unit]\nDescription=Data filesystem at {path}\nBefore=local-fs.target\n\n[Mount]\nWhat=/dev/disk/by-uuid/{uuid}\nWhere={path}\nType={fstype}\n{options}\n[Install]\nWantedBy=local-fs.target\n"
    )
}

/// cloud-config on every boot: never stops the boot.
fn run_cloudconfig(root: &Path, data: &[u8], first: bool, oem_user: &str, hostname: Option<&str>, source: &str, rec: &mut Value) {
    let t = std::time::Instant::now();
    let cfg = match cloudconfig::parse(data) {
        Ok(c) => c,
        Err(e) => {
            log!("provisioning: cloud-config from the {source}: {e}; the boot goes on");
            rec["errors"] = json!([e.to_string()]);
            return;
        }
    };
    let opts = cloudconfig::ApplyOptions {
        oem_user: oem_user.to_string(),
        etcd_unit: "etcd.service".into(),
        first_boot: first,
        run_dir: Some(Path::new("/run").to_path_buf()),
        hostname: hostname.map(str::to_string),
        day: today(),
    };
    let report = cloudconfig::apply(root, &cfg, &opts);
    for line in report.log_lines() {
        log!("provisioning: {line}");
    }
    if let Some(h) = &report.hostname {
        match rustix::system::sethostname(h.as_bytes()) {
            Ok(()) => log!("provisioning: cloud-config: hostname set to {h}"),
            Err(e) => log!("provisioning: cloud-config: sethostname {h:?} failed: {}", std::io::Error::from(e)),
        }
    }
    let units = runtime_units(&report);
    if !units.is_empty() {
        if has_systemd(root) {
            match write_runtime_units(Path::new("/run/systemd/system"), &units) {
                Ok(()) => {
                    for (name, _, wanted_by) in &units {
                        log!("provisioning: cloud-config: commands for the booted system in /run/systemd/system/{name} (wanted by {wanted_by})");
                    }
                }
                Err(e) => log!("provisioning: cloud-config: writing the runtime units failed: {e}"),
            }
        } else {
            log!("provisioning: cloud-config: the root has no systemd: bootcmd, runcmd and unit commands are not run");
        }
    }
    rec["cloud_config"] = serde_json::from_str(&report.to_json()).unwrap_or(Value::Null);
    rec["ok"] = json!(report.ok());
    log!(
        "provisioning: cloud-config applied in {} ms ({})",
        t.elapsed().as_millis(),
        if report.ok() { "no errors" } else { "with errors, logged above" }
    );
}

/// Whether the root boots systemd (which runs the runtime units).
fn has_systemd(root: &Path) -> bool {
    crate::boot::exists_in_root(root, "/usr/lib/systemd/systemd") || crate::boot::exists_in_root(root, "/lib/systemd/systemd")
}

/// Where a `#!` user_data script is kept in the root.
pub const SCRIPT: &str = "var/lib/agent/user-data.script";

/// The runtime unit that runs the user_data script once, on the booted
/// system.
pub fn script_unit() -> String {
    format!(
        "# Written by the guest agent: the #! script from user_data, run once (first boot).\n[Unit]\nDescription=user_data script\nWants=network-online.target\nAfter=network-online.target multi-user.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/{SCRIPT}\nStandardOutput=journal+console\nStandardError=journal+console\n"
    )
}

/// A `#!` script on the first boot: kept in the root, run by systemd.
fn run_script(root: &Path, data: &[u8], source: &str, rec: &mut Value) {
    use std::os::unix::fs::PermissionsExt;
    let interp = String::from_utf8_lossy(data.split(|&b| b == b'\n').next().unwrap_or_default()).trim().to_string();
    if !has_systemd(root) {
        log!("provisioning: #! script from the {source} ({interp}): the root has no systemd, so it is not run");
        rec["skipped"] = json!("the root has no systemd");
        return;
    }
    let path = root.join(SCRIPT);
    let kept = path
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|_| fs::write(&path, data))
        .and_then(|_| fs::set_permissions(&path, fs::Permissions::from_mode(0o700)));
    if let Err(e) = kept {
        log!("provisioning: #! script from the {source}: writing /{SCRIPT} failed: {e}; it is not run");
        rec["errors"] = json!([format!("writing /{SCRIPT}: {e}")]);
        return;
    }
    let unit = ("agent-user-script.service".to_string(), script_unit(), "multi-user.target".to_string());
    match write_runtime_units(Path::new("/run/systemd/system"), std::slice::from_ref(&unit)) {
        Ok(()) => {
            log!("provisioning: #! script from the {source} ({interp}, {} bytes) kept as /{SCRIPT}, run once by /run/systemd/system/{} when the system is up", data.len(), unit.0);
            rec["steps"] = json!([{"action": "script", "target": format!("/{SCRIPT}"), "from": interp, "unit": unit.0}]);
        }
        Err(e) => {
            log!("provisioning: #! script from the {source}: writing its runtime unit failed: {e}");
            rec["errors"] = json!([format!("writing the runtime unit: {e}")]);
        }
    }
}

/// A command line for `ExecStart=`: each word double-quoted, with systemd's
/// escapes (`\`, `"`, and `%`/`$` doubled so they stay literal).
pub fn exec_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let e = a.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$").replace('\n', "\\n");
            format!("\"{e}\"")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The runtime units for what cloud-config leaves to the booted system:
/// (file name, contents, wanted by).
pub fn runtime_units(r: &cloudconfig::Report) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let execs = |cmds: &[Vec<String>]| cmds.iter().map(|c| format!("ExecStart=-{}\n", exec_line(c))).collect::<String>();
    if !r.boot_commands.is_empty() {
        out.push((
            "agent-bootcmd.service".to_string(),
            format!(
                "# Written by the guest agent from cloud-config's bootcmd (every boot).\n[Unit]\nDescription=cloud-config bootcmd\nDefaultDependencies=no\nAfter=local-fs.target\nBefore=sysinit.target\n\n[Service]\nType=oneshot\n{}",
                execs(&r.boot_commands)
            ),
            "sysinit.target".to_string(),
        ));
    }
    if !r.after_boot.is_empty() {
        out.push((
            "agent-cloud-config.service".to_string(),
            format!(
                "# Written by the guest agent from cloud-config: coreos.units commands, then runcmd.\n[Unit]\nDescription=cloud-config commands\nWants=network-online.target\nAfter=network-online.target multi-user.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n{}",
                execs(&r.after_boot)
            ),
            "multi-user.target".to_string(),
        ));
    }
    out
}

fn write_runtime_units(dir: &Path, units: &[(String, String, String)]) -> std::io::Result<()> {
    for (name, text, wanted_by) in units {
        fs::create_dir_all(dir)?;
        fs::write(dir.join(name), text)?;
        let wants = dir.join(format!("{wanted_by}.wants"));
        fs::create_dir_all(&wants)?;
        let link = wants.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{name}"), &link)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_entry(device: &str) -> ignition::Filesystem {
        ignition::Filesystem { device: device.into(), ..Default::default() }
    }

    #[test]
    fn root_entries_are_recognised() {
        let r = RootFs {
            device: "/dev/vda3".into(),
            fstype: "btrfs".into(),
            label: "root".into(),
            uuid: "0a1b".into(),
            partlabel: "root".into(),
            partuuid: "56522d95-29ac".into(),
        };
        for d in [
            "/dev/vda3",
            "/dev/disk/by-label/ROOT",
            "/dev/disk/by-label/root",
            "/dev/disk/by-partlabel/root",
            "/dev/disk/by-uuid/0A1B",
            "/dev/disk/by-partuuid/56522d95-29ac",
        ] {
            assert!(names_root(&fs_entry(d), &r), "{d}");
        }
        for d in ["/dev/vdb", "/dev/disk/by-label/data", "/dev/disk/by-partuuid/ffff"] {
            assert!(!names_root(&fs_entry(d), &r), "{d}");
        }
        let mut f = fs_entry("/dev/vdb");
        f.path = Some("/".into());
        assert!(names_root(&f, &r));
        let mut f = fs_entry("/dev/vdb");
        f.name = Some("root".into());
        assert!(names_root(&f, &r));
    }

    #[test]
    fn mount_units_are_named_and_written_as_systemd_does() {
        assert_eq!(mount_unit_name("/var/lib/data"), "var-lib-data.mount");
        assert_eq!(mount_unit_name("/var/lib/data/"), "var-lib-data.mount");
        assert_eq!(mount_unit_name("/"), "-.mount");
        assert_eq!(mount_unit_name("/srv/my-data/.x y"), "srv-my\\x2ddata-.x\\x20y.mount");
        assert_eq!(mount_unit_name("/.hidden"), "\\x2ehidden.mount");
        let u = mount_unit("0a1b", "/var/lib/data", "btrfs", &["noatime".into(), "compress=zstd".into()]);
        assert!(u.contains("What=/dev/disk/by-uuid/0a1b\nWhere=/var/lib/data\nType=btrfs\nOptions=noatime,compress=zstd\n"), "{u}");
        let (flags, data) = mount_flags(&["noatime,nodev".into(), "compress=zstd".into(), "x-systemd.automount".into()]);
        assert_eq!(flags, rustix::mount::MountFlags::NOATIME | rustix::mount::MountFlags::NODEV);
        assert_eq!(data, "compress=zstd");
    }

    #[test]
    fn exec_lines_keep_every_word_literal() {
        let argv: Vec<String> = ["/bin/sh", "-c", "echo \"$HOME\" 100% \\ done\nls"].iter().map(|s| s.to_string()).collect();
        assert_eq!(exec_line(&argv), r#""/bin/sh" "-c" "echo \"$$HOME\" 100%% \\ done\nls""#);
    }

    #[test]
    fn cloud_config_commands_become_runtime_units() {
        let cfg = cloudconfig::parse(b"#cloud-config\nbootcmd:\n  - echo early\nruncmd:\n  - echo late\ncoreos:\n  units:\n    - name: etcd2.service\n      command: start\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        let opts = cloudconfig::ApplyOptions { run_dir: Some(d.path().join("run")), ..Default::default() };
        let r = cloudconfig::apply(d.path(), &cfg, &opts);
        let units = runtime_units(&r);
        assert_eq!(units.iter().map(|u| u.0.as_str()).collect::<Vec<_>>(), ["agent-bootcmd.service", "agent-cloud-config.service"]);
        assert!(units[0].1.contains("Before=sysinit.target") && units[0].1.contains("echo early"), "{}", units[0].1);
        let late = &units[1].1;
        let start = late.find("systemctl").expect("the unit command");
        assert!(late[start..].contains("etcd2.service") && late.find("echo late").unwrap() > start, "{late}");
        let run = d.path().join("run/systemd/system");
        write_runtime_units(&run, &units).unwrap();
        assert_eq!(
            fs::read_link(run.join("multi-user.target.wants/agent-cloud-config.service")).unwrap(),
            Path::new("../agent-cloud-config.service")
        );
        assert_eq!(fs::read_to_string(run.join("agent-bootcmd.service")).unwrap(), units[0].1);
    }

    #[test]
    fn first_boot_is_an_uninitialized_machine_id() {
        let d = tempfile::tempdir().unwrap();
        assert!(first_boot(d.path()), "no /etc/machine-id");
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/machine-id"), "uninitialized\n").unwrap();
        assert!(first_boot(d.path()));
        fs::write(d.path().join("etc/machine-id"), "").unwrap();
        assert!(first_boot(d.path()));
        fs::write(d.path().join("etc/machine-id"), "41d6df9641ff48009f1df460ff3d2bb0\n").unwrap();
        assert!(!first_boot(d.path()));
    }
}
