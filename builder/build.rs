//! Embeds the guest agent (`oem/agent`, the initramfs `/init`) in
//! `build-image`, so that one binary builds bootable images anywhere.
//!
//! By default this builds the agent as `./build.sh agent` does (static,
//! `--profile agent --target x86_64-unknown-linux-gnu`, `+crt-static`), with the
//! same `cargo`, into its own target folder `<target>/embedded-agent`: not
//! the outer build's folder, whose lock the outer cargo holds while this
//! script runs (a nested build there would wait forever), and not `OUT_DIR`,
//! which differs per profile (debug, release, test, clippy would each build
//! the agent again). The result is copied to `OUT_DIR/guest-agent` for
//! `include_bytes!` (`src/boot/agent.rs` explains the choice).
//!
//! `BUILD_IMAGE_EMBED_AGENT=/path/to/guest-agent` embeds that file instead
//! (agent developers, or a faster build): it must be a static x86_64 ELF. A
//! relative path is taken from the workspace root.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("builder/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR"));

    println!("cargo:rerun-if-env-changed=BUILD_IMAGE_EMBED_AGENT");
    let agent = match std::env::var_os("BUILD_IMAGE_EMBED_AGENT").filter(|v| !v.is_empty()) {
        Some(p) => {
            // Relative to the workspace root, where cargo and ./build.sh
            // are run (a build script runs in builder/).
            let p = workspace.join(p);
            println!("cargo:rerun-if-changed={}", p.display());
            p
        }
        None => build_agent(&workspace, &out_dir),
    };

    let bytes = fs::read(&agent).unwrap_or_else(|e| fail(&format!("reading the guest agent {}: {e}", agent.display())));
    if let Err(why) = check_static_elf(&bytes) {
        fail(&format!("{} cannot be the initramfs /init: {why}", agent.display()));
    }
    let embedded = out_dir.join("guest-agent");
    write_if_changed(&embedded, &bytes);
    let version = agent_version(&embedded).unwrap_or_else(|| {
        println!("cargo:warning=could not run `{} --version`; the embedded agent's version is recorded as `unknown`", agent.display());
        "unknown".into()
    });
    println!("cargo:rustc-env=BUILD_IMAGE_EMBEDDED_AGENT_VERSION={version}");
}

/// Build `guest-agent` statically into `<target>/embedded-agent`; returns
/// the binary.
fn build_agent(workspace: &Path, out_dir: &Path) -> PathBuf {
    if !workspace.join("oem/agent/Cargo.toml").is_file() {
        fail(&format!(
            "the guest agent's sources are not at {}: build from the build-image workspace, or set BUILD_IMAGE_EMBED_AGENT=/path/to/static/guest-agent",
            workspace.join("oem/agent").display()
        ));
    }
    // Everything the agent can be built from: its crate and any crate
    // shared with it under oem/ (directories are watched recursively), the
    // workspace manifest (profiles, dependency versions) and the lock.
    // Path dependencies elsewhere come from the dep-info file below.
    println!("cargo:rerun-if-changed={}", workspace.join("oem").display());
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());

    let target_dir = agent_target_dir(out_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "guest-agent", "--profile", "agent", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build has already resolved the workspace and written
    // Cargo.lock: the agent is built from exactly that lock, and never
    // rewrites it under the outer cargo's feet.
    if workspace.join("Cargo.lock").is_file() {
        cmd.arg("--locked");
    }
    // `cargo build --offline` / `--frozen` are not visible to build scripts
    // as variables (CARGO_NET_OFFLINE and config files are, and are
    // inherited): read them from the cargo that runs this script.
    if outer_cargo_offline() {
        cmd.arg("--offline");
    }
    // Only the agent's own flags: the outer RUSTFLAGS (CARGO_ENCODED_RUSTFLAGS
    // is always set for build scripts, and beats every other source) could
    // hold -C target-cpu=native and the like, wrong for a guest binary.
    // CARGO_ENCODED_RUSTFLAGS with --target applies to the target only, as
    // `./build.sh agent`'s CARGO_TARGET_…_RUSTFLAGS does, so the two builds
    // give the same bytes.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static").env_remove("RUSTFLAGS");
    // `cargo clippy` runs the outer build with clippy-driver as the
    // workspace wrapper and its -D flags: not for this build.
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER").env_remove("CLIPPY_ARGS");
    cmd.env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR").env_remove("CARGO_BUILD_TARGET");
    // Cargo reads a build script's stdout for `cargo:` lines: keep the
    // nested cargo's chatter on stderr (shown when the build fails).
    cmd.stdout(stderr_stdio());
    eprintln!("build-image build.rs: {cmd:?}");
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("running {}: {e}", cargo.to_string_lossy())));
    if !status.success() {
        fail(&format!(
            "building the guest agent failed (`cargo build -p guest-agent --profile agent --target {TARGET}` into {}, see above). \
             To embed a prebuilt agent instead: BUILD_IMAGE_EMBED_AGENT=/path/to/static/guest-agent",
            target_dir.display()
        ));
    }
    let bin = target_dir.join(TARGET).join("agent/guest-agent");
    watch_dep_info(&bin.with_extension("d"), workspace);
    bin
}

/// `<target>/embedded-agent`, shared by every profile of the outer build.
/// The outer target folder is the nearest ancestor of OUT_DIR holding
/// cargo's CACHEDIR.TAG; without one, a folder in OUT_DIR.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(|t| t.join("embedded-agent"))
        .unwrap_or_else(|| out_dir.join("embedded-agent"))
}

/// Whether the cargo running this script was told `--offline` or `--frozen`.
fn outer_cargo_offline() -> bool {
    let ppid = std::os::unix::process::parent_id();
    let Ok(cmdline) = fs::read(format!("/proc/{ppid}/cmdline")) else { return false };
    cmdline.split(|b| *b == 0).any(|a| a == b"--offline" || a == b"--frozen" || a == b"net.offline=true")
}

/// Re-run when a workspace file the agent was compiled from changes (a
/// path dependency outside oem/, should the agent ever have one).
fn watch_dep_info(dep_info: &Path, workspace: &Path) {
    let Ok(text) = fs::read_to_string(dep_info) else { return };
    // `TARGET: DEP DEP …`, spaces in names escaped with a backslash.
    let Some((_, deps)) = text.split_once(": ") else { return };
    let mut files = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => files.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    files.extend((!cur.is_empty()).then_some(cur));
    let oem = workspace.join("oem");
    for f in files.iter().map(PathBuf::from) {
        if f.starts_with(workspace) && !f.starts_with(&oem) {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }
}

/// A static x86_64 ELF executable: no PT_INTERP (the initramfs has no
/// dynamic loader; `/init` would fail with ENOENT).
fn check_static_elf(b: &[u8]) -> Result<(), String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if b[4] != 2 || b[5] != 1 || u16::from_le_bytes([b[18], b[19]]) != 62 {
        return Err("not a 64-bit little-endian x86_64 ELF".into());
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(ph) = b.get(o..o + 4) else { return Err("truncated program headers".into()) };
        if u32::from_le_bytes(ph.try_into().unwrap()) == 3 {
            return Err("dynamically linked (it has an ELF interpreter): build it with -C target-feature=+crt-static".into());
        }
    }
    Ok(())
}

/// `guest-agent --version` prints `guest-agent X.Y.Z` without needing PID 1.
fn agent_version(bin: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin, fs::Permissions::from_mode(0o755)).ok()?;
    let out = Command::new(bin).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let v = text.trim().strip_prefix("guest-agent ")?;
    (out.status.success() && !v.is_empty() && !v.contains(char::is_whitespace)).then(|| v.to_string())
}

fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)).unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
}

fn stderr_stdio() -> Stdio {
    use std::os::fd::AsFd;
    std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::inherit())
}

fn env(name: &str) -> OsString {
    std::env::var_os(name).unwrap_or_else(|| fail(&format!("{name} is not set (build scripts run under cargo)")))
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
