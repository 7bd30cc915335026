//! The README's quick start, run as a new user would: the first ```sh block
//! under its "Quick start" heading, line by line, in a temp folder outside
//! the checkout, with only a copy of the `build-image` binary on PATH (and
//! the system's folders). `cd` is done by the test; `#` starts a comment.
//! The last command (`build-image boot …`) must reach the image's marker.
//!
//! The package cache is the tests' (`$BUILD_IMAGE_CACHE`, else build-image's
//! `~/.cache/build-image`), so nothing is downloaded again; it needs `./build.sh fetch` first, and
//! qemu + OVMF (`./build.sh deps`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The command lines of the first ```sh block under the first heading that
/// says "quick start" (any level, any case), comments and blank lines
/// dropped.
fn quick_start(readme: &str) -> Result<Vec<String>, String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.trim_start_matches('#').trim().eq_ignore_ascii_case("quick start"))
        .ok_or("no `## Quick start` heading")?;
    for l in lines.by_ref() {
        if l.starts_with('#') {
            return Err(format!("no ```sh block under `## Quick start` before the next heading `{l}`"));
        }
        if l.trim() == "```sh" {
            break;
        }
    }
    let mut cmds = Vec::new();
    for l in lines {
        if l.trim() == "```" {
            return if cmds.is_empty() { Err("the quick start's ```sh block is empty".into()) } else { Ok(cmds) };
        }
        let cmd = strip_comment(l).trim();
        if !cmd.is_empty() {
            cmds.push(cmd.to_string());
        }
    }
    Err("the quick start's ```sh block does not end".into())
}

/// `cmd  # comment` → `cmd` (a `#` at the start or after a space, as sh
/// reads it; the quick start has no quotes that hold one).
fn strip_comment(l: &str) -> &str {
    let b = l.as_bytes();
    match (0..b.len()).find(|&i| b[i] == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace())) {
        Some(i) => &l[..i],
        None => l,
    }
}

#[test]
fn the_quick_start_parser_reads_the_block() {
    let md = "# x\n\nintro\n\n## Quick start\n\nText.\n\n```sh\nbuild-image init demo   # a project\ncd demo\n\n# a comment line\nbuild-image fetch\n```\n\n```sh\nnot this\n```\n";
    assert_eq!(quick_start(md).unwrap(), ["build-image init demo", "cd demo", "build-image fetch"]);
    assert_eq!(strip_comment("echo a#b # c"), "echo a#b ");
    assert!(quick_start("## Usage\n```sh\nx\n```\n").unwrap_err().contains("heading"));
    assert!(quick_start("## Quick start\n\n## Next\n```sh\nx\n```\n").unwrap_err().contains("next heading"));
}

#[test]
fn the_readme_quick_start_works_outside_the_checkout() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let cmds = quick_start(&readme).unwrap_or_else(|e| panic!("README.md: {e}"));
    assert!(cmds.last().is_some_and(|c| c.starts_with("build-image boot")), "the quick start ends with a boot: {cmds:?}");

    let t = tempfile::tempdir().unwrap();
    let home = t.path().canonicalize().unwrap();
    assert!(!home.starts_with(root()), "the temp folder must be outside the checkout");
    let bin_dir = home.join("bin");
    fs::create_dir(&bin_dir).unwrap();
    fs::copy(bin(), bin_dir.join("build-image")).unwrap();
    let work = home.join("work");
    fs::create_dir(&work).unwrap();
    let path = format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display());
    // The tests' package cache: `$BUILD_IMAGE_CACHE`, else build-image's default.
    let cache = common::cache();

    let mut cwd: PathBuf = work.clone();
    let mut last = String::new();
    for cmd in &cmds {
        if let Some(dir) = cmd.strip_prefix("cd ") {
            cwd = cwd.join(dir.trim());
            assert!(cwd.is_dir(), "`{cmd}`: {} is not a folder", cwd.display());
            continue;
        }
        eprintln!("$ {cmd}    (in {})", cwd.strip_prefix(&home).unwrap_or(&cwd).display());
        // A clean environment: no BUILD_IMAGE_AGENT, no cargo variables.
        let o = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("BUILD_IMAGE_CACHE", &cache)
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "`{cmd}` (in {}) failed ({}):\n{}{err}", cwd.display(), o.status, String::from_utf8_lossy(&o.stdout));
        last = err;
    }
    // The boot waited for the recipe's smoke.expect marker (it fails
    // otherwise); check it named it.
    let image = cmds.last().unwrap().split_whitespace().nth(2).expect("build-image boot IMAGE");
    let manifest = cwd.join(Path::new(image).with_extension("manifest.json"));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    let marker = m["smoke"]["expect"].as_str().expect("the starter recipe has smoke.expect");
    assert!(last.contains(&format!("`{marker}` after")), "the boot did not report {marker:?}:\n{last}");
    assert_eq!(m["boot"]["agent"]["source"], "embedded");
}
