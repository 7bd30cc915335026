//! `provision::cloudconfig` against the real cloud-init (Debian 22.4).
//!
//! For each document of `tests/cloud-config/*.yaml`:
//! * a template root is made once from the Debian minbase tree
//!   (`$BUILD_IMAGE_MINBASE`): its account files, `login.defs`,
//!   `default/useradd` and `skel`, plus the image's `core` user made with
//!   the host's `useradd --root`;
//! * `tests/cloud-config/oracle.sh` runs cloud-init's four stages on the
//!   document with that template laid over the host's `/` (overlayfs, in a
//!   private namespace) and keeps what cloud-init wrote;
//! * our `parse` + `apply` run on a copy of the template;
//! * only what the document names is compared: each `write_files` path,
//!   `/etc/hostname`, `/etc/hosts` (with `manage_etc_hosts`), and for each
//!   user its `passwd` line, the groups it is a member of, its `shadow`
//!   password, its home directory and its SSH keys (type, mode, uid, gid,
//!   content sha256; keys as a set, cloud-init writes them in Python set
//!   order), and the `runcmd` script.
//!
//! Each document lists, in `# differs: KEY — reason` comments, where the
//! CoreOS dialect differs from cloud-init on purpose (`KEY*` for every key
//! with that prefix). The test fails when anything else differs, and when
//! a listed difference is not there.
//!
//! Needs root, `unshare`, overlayfs and cloud-init; skipped with a message
//! otherwise.

mod common;

use provision::cloudconfig::{self, ApplyOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Account files of the image that useradd reads or writes.
const TEMPLATE_FILES: &[&str] =
    &["passwd", "group", "shadow", "gshadow", "login.defs", "subuid", "subgid", "default/useradd", "skel", "hostname"];

fn corpus() -> Vec<PathBuf> {
    let dir = common::root().join("tests/cloud-config");
    let mut v: Vec<PathBuf> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    v.sort();
    v
}

fn template(minbase: &Path, dir: &Path) {
    fs::create_dir_all(dir.join("etc/default")).unwrap();
    fs::create_dir_all(dir.join("home")).unwrap();
    for f in TEMPLATE_FILES {
        let src = minbase.join("etc").join(f);
        if src.exists() {
            let (ok, out) = common::tool("cp", &["-a", src.to_str().unwrap(), dir.join("etc").join(f).to_str().unwrap()]);
            assert!(ok, "{out}");
        }
    }
    // The image's OEM user, as recipes/coreos-node.json makes it.
    let (ok, out) = common::tool(
        "useradd",
        &[
            "--root",
            dir.to_str().unwrap(),
            "--create-home",
            "--shell",
            "/bin/bash",
            "--comment",
            "CoreOS Admin",
            "--groups",
            "sudo",
            "core",
        ],
    );
    assert!(ok, "useradd --root: {out}");
    for f in ["passwd-", "group-", "shadow-", "gshadow-", "subuid-", "subgid-", ".pwd.lock"] {
        let _ = fs::remove_file(dir.join("etc").join(f));
    }
}

/// What a path is: type, mode, uid, gid, sha256 of the content (or the link target).
fn describe(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Err(_) => "absent".into(),
        Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => "absent (whiteout)".into(),
        Ok(m) => {
            let ids = format!("{:04o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            if m.file_type().is_symlink() {
                format!("link {ids} -> {}", fs::read_link(p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {ids}")
            } else {
                format!("file {ids} {}", common::sha256(p))
            }
        }
    }
}

/// The booted system's view of a root: `upper` over `lower` (the oracle's
/// overlay) or one directory.
struct View<'a> {
    upper: &'a Path,
    lower: Option<&'a Path>,
}

impl View<'_> {
    fn path(&self, guest: &str) -> PathBuf {
        let rel = guest.trim_start_matches('/');
        let up = self.upper.join(rel);
        match self.lower {
            Some(low) if fs::symlink_metadata(&up).is_err() => low.join(rel),
            _ => up,
        }
    }
    fn read(&self, guest: &str) -> String {
        fs::read_to_string(self.path(guest)).unwrap_or_default()
    }
    fn line(&self, file: &str, name: &str) -> Option<String> {
        self.read(file).lines().find(|l| l.split(':').next() == Some(name)).map(String::from)
    }
}

/// Everything compared for one document, by key.
fn facts(v: &View, cfg: &cloudconfig::CloudConfig, runcmd_script: Option<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut paths: BTreeSet<String> = cfg.write_files.iter().map(|f| f.path.clone()).collect();
    if cfg.hostname.is_some() {
        paths.insert("/etc/hostname".into());
    }
    if cfg.manage_etc_hosts {
        paths.insert("/etc/hosts".into());
    }
    for p in paths {
        out.insert(format!("file:{p}"), describe(&v.path(&p)));
    }
    let mut users: Vec<(String, bool)> = cfg.users.iter().map(|u| (u.name.clone(), !u.ssh_authorized_keys.is_empty())).collect();
    if !cfg.ssh_authorized_keys.is_empty() {
        users.push(("core".into(), true));
    }
    for (name, keys) in users {
        let pw = v.line("/etc/passwd", &name);
        out.insert(format!("passwd:{name}"), pw.clone().unwrap_or_else(|| "absent".into()));
        let member_of: Vec<String> = v
            .read("/etc/group")
            .lines()
            .filter(|l| l.rsplit(':').next().unwrap_or_default().split(',').any(|m| m == name))
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
            .collect();
        out.insert(format!("groups:{name}"), member_of.join(","));
        let shadow = v.line("/etc/shadow", &name).map(|l| l.split(':').nth(1).unwrap_or_default().to_string());
        out.insert(format!("shadow:{name}"), shadow.unwrap_or_else(|| "absent".into()));
        let home = pw.as_deref().and_then(|l| l.split(':').nth(5)).unwrap_or("/nonexistent").to_string();
        out.insert(format!("home:{name}"), describe(&v.path(&home)));
        if keys {
            let ssh = format!("{home}/.ssh");
            let ak = format!("{ssh}/authorized_keys");
            let mut lines: Vec<String> = v.read(&ak).lines().map(String::from).collect();
            lines.sort();
            let meta = |p: &str| describe(&v.path(p)).split(' ').take(3).collect::<Vec<_>>().join(" ");
            out.insert(format!("keys:{name}"), format!("{} | {} | {}", meta(&ssh), meta(&ak), lines.join(" / ")));
        }
    }
    if let Some(s) = runcmd_script {
        out.insert("runcmd".into(), s);
    }
    out
}

fn declared_differences(doc: &str) -> BTreeSet<String> {
    doc.lines().filter_map(|l| l.strip_prefix("# differs: ")).map(|l| l.split_whitespace().next().unwrap_or_default().to_string()).collect()
}

#[test]
fn cloudconfig_conformance() {
    if !common::is_root() {
        eprintln!("SKIPPED cloudconfig_conformance: needs root (unshare, overlayfs and useradd --root for the real cloud-init)");
        return;
    }
    let minbase = common::minbase();
    if !minbase.join("etc/passwd").exists() {
        eprintln!("SKIPPED cloudconfig_conformance: no Debian minbase tree at {} (set BUILD_IMAGE_MINBASE)", minbase.display());
        return;
    }
    if Command::new("cloud-init").arg("--version").output().is_err() {
        eprintln!("SKIPPED cloudconfig_conformance: cloud-init is not installed (apt-get install cloud-init)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tmpl = work.path().join("template");
    template(&minbase, &tmpl);
    let oracle = common::root().join("tests/cloud-config/oracle.sh");
    let docs = corpus();
    assert!(docs.len() >= 10, "the corpus has {} documents", docs.len());
    let (mut same, mut expected, mut failures) = (0, 0, Vec::new());
    for doc in &docs {
        let name = doc.file_stem().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(doc).unwrap();
        let cfg = cloudconfig::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors: Vec<String> =
            cfg.diagnostics.iter().filter(|d| d.severity == cloudconfig::Severity::Error).map(|d| d.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");

        // The oracle.
        let out = work.path().join(format!("oracle-{name}"));
        let o = Command::new(&oracle).args([doc.as_path(), tmpl.as_path(), out.as_path()]).output().unwrap();
        assert!(o.status.success(), "{name}: oracle.sh failed: {}", String::from_utf8_lossy(&o.stderr));
        let scripts: Vec<PathBuf> = fs::read_dir(out.join("var/lib/cloud/instances"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("scripts/runcmd")).filter(|p| p.exists()).collect())
            .unwrap_or_default();
        let theirs = facts(
            &View { upper: &out, lower: Some(&tmpl) },
            &cfg,
            (!cfg.runcmd.is_empty()).then(|| scripts.first().map(|p| fs::read_to_string(p).unwrap()).unwrap_or_default()),
        );

        // Ours, on a copy of the same template.
        let root = work.path().join(format!("ours-{name}"));
        let (ok, msg) = common::tool("cp", &["-a", tmpl.to_str().unwrap(), root.to_str().unwrap()]);
        assert!(ok, "{msg}");
        let opts = ApplyOptions { run_dir: Some(root.join("run")), ..Default::default() };
        let report = cloudconfig::apply(&root, &cfg, &opts);
        assert!(report.ok(), "{name}: {:#?}", report.log_lines());
        let ours_script = report.after_boot.iter().find(|a| a.first().is_some_and(|c| c == "/bin/sh")).map(|a| a[2].clone());
        let ours = facts(&View { upper: &root, lower: None }, &cfg, (!cfg.runcmd.is_empty()).then(|| ours_script.unwrap_or_default()));

        let declared = declared_differences(&text);
        let listed = |k: &str| declared.iter().any(|d| d == k || d.strip_suffix('*').is_some_and(|p| k.starts_with(p)));
        let keys: BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
        let mut differing = BTreeSet::new();
        assert!(!keys.is_empty(), "{name}: nothing compared");
        for k in keys {
            let (t, u) = (theirs.get(k), ours.get(k));
            let differs = t != u;
            let listed = listed(k);
            if differs {
                differing.insert(k.clone());
            }
            match (differs, listed) {
                (false, false) => same += 1,
                (true, true) => expected += 1,
                (true, false) => failures.push(format!("{name}: {k}\n    cloud-init: {t:?}\n    ours:       {u:?}")),
                (false, true) if !declared.contains(k.as_str()) => same += 1,
                (false, true) => failures.push(format!("{name}: {k} is listed as a difference but is the same: {t:?}")),
            }
            eprintln!(
                "{name:28} {k:40} {}",
                if !differs {
                    "same"
                } else if listed {
                    "differs (documented)"
                } else {
                    "DIFFERS"
                }
            );
        }
        for d in &declared {
            let hit = match d.strip_suffix('*') {
                Some(p) => differing.iter().any(|k| k.starts_with(p)),
                None => theirs.contains_key(d) || ours.contains_key(d),
            };
            if !hit {
                failures.push(format!("{name}: listed difference {d} matches nothing that differs"));
            }
        }
    }
    eprintln!(
        "cloudconfig conformance: {} documents, {same} facts the same, {expected} documented differences, {} failures",
        docs.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} facts differ from cloud-init:\n{}", failures.len(), failures.join("\n"));
}
