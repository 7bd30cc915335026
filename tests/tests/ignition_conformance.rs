//! The agent's Ignition (`provision::ignition`) against Debian's real
//! Ignition 2.14 as the oracle.
//!
//! * **Trees:** for every config in `tests/ignition/*.ign`, two copies of a
//!   template root (the Debian minbase's `/etc`, `/root`, `/home`, the
//!   merged-`/usr` symlinks and the unit files under
//!   `/usr/lib/systemd/system`) are made; the real Ignition's `fetch` and
//!   `files` stages run on one (`tests/ignition/oracle.sh`), our
//!   `check` + `apply` on the other, with the same day for shadow's
//!   `lastchg` (the oracle gets it as `SOURCE_DATE_EPOCH`, which
//!   useradd/usermod honour). Then a manifest of both trees (type, octal
//!   mode, uid, gid, sha256, symlink target, hard-link count) must be
//!   equal, after dropping what only one side writes on purpose: shadow's
//!   `-` backups and `.pwd.lock` (see `provision::passwd`), and comparing
//!   the preset file as a set of lines (Ignition writes it in Go map
//!   order). Configs named `*.fail.ign` must fail on both sides (and the
//!   oracle must indeed fail, so the case tests what it says).
//! * **Spec 2.x:** Ignition 2.14 no longer reads 2.x, so each
//!   `tests/ignition/v2/NAME.ign` comes with `NAME.v3.ign`, its
//!   translation written by hand by ign-converter's rules: the oracle
//!   applies the 3.x one, we apply the 2.x one, and the trees must match.
//! * **Verdicts:** for every corpus file, valid and
//!   `tests/ignition/invalid/*.ign`, `provision::ignition::parse` accepts
//!   exactly when `ignition-validate` does.
//!
//! Needs root (Ignition chowns, useradd writes as root) and the `ignition`
//! package; skips with a message otherwise.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";
/// 2023-11-14: a fixed day, so that both sides write the same `lastchg`.
const DAY: i64 = 19675;

fn corpus_dir() -> PathBuf {
    common::root().join("tests/ignition")
}

fn available() -> bool {
    if !common::is_root() {
        eprintln!("skipped: the Ignition oracle needs root (CI runs as root)");
        return false;
    }
    if !Path::new(IGNITION).exists() || !Path::new("/usr/bin/ignition-validate").exists() {
        eprintln!("skipped: Debian's `ignition` package is not installed (./build.sh deps installs it)");
        return false;
    }
    if !common::minbase().join("etc/login.defs").exists() {
        eprintln!("skipped: no Debian minbase at {} (./build.sh test makes it)", common::minbase().display());
        return false;
    }
    true
}

fn ign_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ign") && !p.to_string_lossy().ends_with(".v3.ign"))
        .collect();
    v.sort();
    v
}

/// A template root in `dir`: what of the minbase Ignition and useradd read.
fn template(dir: &Path) {
    let m = common::minbase();
    fs::create_dir_all(dir.join("usr/lib/systemd")).unwrap();
    for p in ["usr/bin", "usr/sbin", "usr/lib64"] {
        fs::create_dir_all(dir.join(p)).unwrap();
    }
    let mut args: Vec<PathBuf> =
        ["etc", "home", "root", "bin", "sbin", "lib", "lib64"].iter().map(|p| m.join(p)).filter(|p| p.symlink_metadata().is_ok()).collect();
    args.push(dir.to_path_buf());
    let st = Command::new("cp").arg("-a").args(&args).status().unwrap();
    assert!(st.success(), "cp -a of the minbase failed");
    let st = Command::new("cp").arg("-a").arg(m.join("usr/lib/systemd/system")).arg(dir.join("usr/lib/systemd/")).status().unwrap();
    assert!(st.success());
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// One line per path, normalised (see the module docs).
fn manifest(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let m = fs::symlink_metadata(&p).unwrap();
            let base = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            let ft = m.file_type();
            let line = if ft.is_symlink() {
                format!("l {base} -> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!("d {base}")
            } else if ft.is_file() {
                let data = fs::read(&p).unwrap();
                let data = if rel == "/etc/systemd/system-preset/20-ignition.preset" {
                    let mut lines: Vec<&str> = std::str::from_utf8(&data).unwrap().lines().collect();
                    lines.sort();
                    lines.join("\n").into_bytes()
                } else {
                    data
                };
                format!("f {base} n{} {}", m.nlink(), &sha256(&data)[..16])
            } else {
                format!("? {base}")
            };
            out.insert(rel, line);
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    for f in ["passwd", "group", "shadow", "gshadow", "subuid", "subgid"] {
        out.remove(&format!("/etc/{f}-"));
    }
    out.remove("/etc/.pwd.lock");
    out
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                out.push(format!("{k}\n    ignition: {}\n    ours:     {}", x.map_or("-", String::as_str), y.map_or("-", String::as_str)))
            }
        }
    }
    out
}

fn run_oracle(cfg: &Path, root: &Path) -> (bool, String) {
    let o = Command::new("bash")
        .arg(corpus_dir().join("oracle.sh"))
        .arg(cfg)
        .arg(root)
        .env("SOURCE_DATE_EPOCH", (DAY * 86400 + 3600).to_string())
        .output()
        .unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn run_ours(cfg: &Path, root: &Path) -> Result<(), String> {
    let data = fs::read(cfg).unwrap();
    let parsed = provision::ignition::check(&data).map_err(|e| e.to_string())?;
    provision::ignition::apply(root, &parsed.config, &provision::ignition::ApplyOptions { day: DAY }).map_err(|e| e.to_string())?;
    Ok(())
}

/// Which file the oracle runs for a corpus entry (the 3.x translation for 2.x ones).
fn oracle_config(cfg: &Path) -> PathBuf {
    let s = cfg.to_string_lossy();
    if cfg.parent().is_some_and(|p| p.ends_with("v2")) {
        PathBuf::from(s.replace(".ign", ".v3.ign"))
    } else {
        cfg.to_path_buf()
    }
}

#[test]
fn trees_match_the_real_ignition() {
    if !available() {
        return;
    }
    let dir = corpus_dir();
    let mut configs = ign_files(&dir);
    configs.extend(ign_files(&dir.join("v2")));
    assert!(configs.len() >= 25, "the corpus has {} configs, want at least 25", configs.len());
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("template");
    template(&base);
    let mut failures = Vec::new();
    let (mut matched, mut both_failed) = (0, 0);
    for cfg in &configs {
        let name = cfg.strip_prefix(&dir).unwrap().display().to_string();
        let expect_fail = name.ends_with(".fail.ign");
        let (r1, r2) = (tmp.path().join("ignition"), tmp.path().join("ours"));
        for r in [&r1, &r2] {
            let _ = fs::remove_dir_all(r);
            assert!(Command::new("cp").arg("-a").arg(&base).arg(r).status().unwrap().success());
        }
        let (ok1, log1) = run_oracle(&oracle_config(cfg), &r1);
        let ours = run_ours(cfg, &r2);
        match (ok1, &ours) {
            (true, Ok(())) if expect_fail => failures.push(format!("{name}: named .fail but both succeeded")),
            (true, Ok(())) => {
                let d = diff(&manifest(&r1), &manifest(&r2));
                if d.is_empty() {
                    matched += 1;
                } else {
                    failures.push(format!("{name}: trees differ:\n  {}", d.join("\n  ")));
                }
            }
            (false, Err(e)) => {
                if expect_fail {
                    both_failed += 1;
                    eprintln!("{name}: both failed as expected\n    ignition: {}    ours:     {e}", log1.trim_end());
                } else {
                    failures.push(format!("{name}: both failed, but the name does not say .fail:\n  ignition: {log1}\n  ours: {e}"));
                }
            }
            (true, Err(e)) => failures.push(format!("{name}: Ignition succeeded, ours failed: {e}")),
            (false, Ok(())) => failures.push(format!("{name}: Ignition failed, ours succeeded:\n  {log1}")),
        }
    }
    eprintln!("{} configs: {matched} trees equal, {both_failed} failed on both sides as expected", configs.len());
    assert!(failures.is_empty(), "{} of {} configs disagree:\n{}", failures.len(), configs.len(), failures.join("\n\n"));
}

#[test]
fn verdicts_match_ignition_validate() {
    if !available() {
        return;
    }
    let dir = corpus_dir();
    let mut files = ign_files(&dir);
    let invalid = ign_files(&dir.join("invalid"));
    assert!(invalid.len() >= 10, "want at least 10 broken configs, have {}", invalid.len());
    files.extend(invalid);
    // Spec 2.x: Ignition 2.14 rejects them; their 3.x translations are checked instead.
    for v2 in ign_files(&dir.join("v2")) {
        files.push(oracle_config(&v2));
    }
    let mut disagree = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for f in &files {
        let (theirs, out) = common::tool("ignition-validate", &[f.to_str().unwrap()]);
        let ours = provision::ignition::parse(&fs::read(f).unwrap());
        if theirs {
            accepted += 1;
        } else {
            rejected += 1;
        }
        if theirs != ours.is_ok() {
            let why = match &ours {
                Ok(p) => format!("accepted ({} warnings)", p.warnings.len()),
                Err(e) => format!("rejected: {e}"),
            };
            disagree.push(format!(
                "{}: ignition-validate {} ({}), ours {why}",
                f.display(),
                if theirs { "accepts" } else { "rejects" },
                out.trim()
            ));
        }
    }
    eprintln!("{} configs: ignition-validate accepts {accepted}, rejects {rejected}", files.len());
    assert!(disagree.is_empty(), "verdicts differ:\n{}", disagree.join("\n"));
}

/// Our unit of the 2.x translation: a 2.x config and its hand translation
/// give the same model apart from the version and where entries came from.
#[test]
fn v2_corpus_translates_like_its_v3_twin() {
    for v2 in ign_files(&corpus_dir().join("v2")) {
        let a = provision::ignition::parse(&fs::read(&v2).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", v2.display()));
        let b = provision::ignition::parse(&fs::read(oracle_config(&v2)).unwrap()).unwrap();
        assert_eq!(a.config.passwd.users.len(), b.config.passwd.users.len(), "{}", v2.display());
        let paths = |c: &provision::ignition::Config| {
            let mut v: Vec<(String, Option<i64>, Option<bool>)> =
                c.storage.files.iter().map(|f| (f.node.path.clone(), f.mode, f.node.overwrite)).collect();
            v.sort();
            v
        };
        assert_eq!(paths(&a.config), paths(&b.config), "{}", v2.display());
        let units = |c: &provision::ignition::Config| {
            c.systemd.units.iter().map(|u| (u.name.clone(), u.enabled, u.mask, u.contents.clone())).collect::<Vec<_>>()
        };
        assert_eq!(units(&a.config), units(&b.config), "{}", v2.display());
    }
}
