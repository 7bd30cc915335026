//! `build-image boot`: smoke-boot an image in qemu-system-x86_64 and wait for
//! a marker on the serial console.
//!
//! The disk is virtio; UEFI uses OVMF (with a private copy of its variable
//! store), BIOS uses qemu's SeaBIOS. The serial console is echoed to the
//! terminal and written to a log file. `--accel auto` uses KVM only when a
//! short probe answers: on some hosts `/dev/kvm` exists but hangs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Firmware to boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    Uefi,
    Bios,
}

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct BootOptions {
    pub image: PathBuf,
    pub firmware: Firmware,
    /// Text to wait for; None = take it from the manifest's `smoke.expect`.
    pub expect: Option<String>,
    pub timeout: Duration,
    pub accel: Accel,
    pub memory_mib: u32,
    pub drives: Vec<PathBuf>,
    pub hostfwd: Vec<String>,
    /// Let the guest reach the host's networks through the user network.
    /// Off by default (`restrict=on`): a smoke boot must not pick up the
    /// build machine's cloud metadata service (169.254.169.254) or depend on
    /// its network. Host port forwards work either way.
    pub outbound: bool,
    /// Echo the console to stdout.
    pub echo: bool,
    /// Serial log file (default: IMAGE.serial.log).
    pub log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("no marker to wait for: pass --expect TEXT, or give the recipe a \"smoke\": {{\"expect\": ...}} (none in {manifest})")]
    NoMarker { manifest: String },
    #[error("starting {cmd}: is qemu-system-x86 installed?")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OVMF firmware not found at {path}: install the `ovmf` package")]
    NoOvmf { path: String },
    #[error("{what} after {secs:.1} s without `{expect}` (log: {log}); last lines:\n{tail}")]
    Failed { what: String, secs: f64, expect: String, log: String, tail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a successful boot took.
#[derive(Debug, Clone)]
pub struct BootReport {
    pub marker: String,
    pub seconds: f64,
    pub accel: Accel,
    pub log: PathBuf,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The marker the recipe recorded in the manifest beside `image`.
pub fn manifest_marker(image: &Path) -> (Option<String>, PathBuf) {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let m = image.with_file_name(format!("{stem}.manifest.json"));
    let marker = std::fs::read_to_string(&m)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["smoke"]["expect"].as_str().map(str::to_string));
    (marker, m)
}

/// Whether KVM answers: a qemu with no machine that must quit at once.
pub fn kvm_works() -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-M", "none", "-nodefaults", "-display", "none", "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn format_of(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        Some("vhd") => "vpc",
        _ => "raw",
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boot and wait for the marker.
pub fn boot(o: &BootOptions) -> Result<BootReport, BootError> {
    let (recorded, manifest) = manifest_marker(&o.image);
    let expect = o.expect.clone().or(recorded).ok_or_else(|| BootError::NoMarker { manifest: manifest.display().to_string() })?;
    let accel = match o.accel {
        Accel::Auto => {
            if kvm_works() {
                Accel::Kvm
            } else {
                Accel::Tcg
            }
        }
        a => a,
    };
    let log_path = o.log.clone().unwrap_or_else(|| {
        let mut s = o.image.clone().into_os_string();
        s.push(".serial.log");
        PathBuf::from(s)
    });
    let io = |what: String| move |source| BootError::Io { what, source };
    let mut log = std::fs::File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    let vars = tempfile::NamedTempFile::new().map_err(io("creating a copy of the OVMF variables".into()))?;
    let mut args: Vec<String> = vec![
        "-accel".into(),
        if accel == Accel::Kvm { "kvm".into() } else { "tcg".into() },
        "-m".into(),
        o.memory_mib.to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
    ];
    if o.firmware == Firmware::Uefi {
        if !Path::new(OVMF_CODE).exists() {
            return Err(BootError::NoOvmf { path: OVMF_CODE.into() });
        }
        std::fs::copy(OVMF_VARS, vars.path()).map_err(io(format!("copying {OVMF_VARS}")))?;
        args.push("-drive".into());
        args.push(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
        args.push("-drive".into());
        args.push(format!("if=pflash,format=raw,file={}", vars.path().display()));
    }
    for d in std::iter::once(&o.image).chain(&o.drives) {
        args.push("-drive".into());
        args.push(format!("file={},format={},if=virtio,snapshot=on", d.display(), format_of(d)));
    }
    let mut netdev = if o.outbound { "user,id=n0".to_string() } else { "user,id=n0,restrict=on".to_string() };
    for h in &o.hostfwd {
        netdev.push_str(&format!(",hostfwd={h}"));
    }
    args.extend(["-netdev".into(), netdev, "-device".into(), "virtio-net-pci,netdev=n0".into()]);
    let start = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BootError::Spawn { cmd: "qemu-system-x86_64".into(), source })?;
    let mut child = Kill(child);
    let mut out = child.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut seen: Vec<u8> = Vec::new();
    let fail = |what: String, seen: &[u8]| {
        let text = String::from_utf8_lossy(seen);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        BootError::Failed { what, secs: start.elapsed().as_secs_f64(), expect: expect.clone(), log: log_path.display().to_string(), tail }
    };
    loop {
        let left = o.timeout.checked_sub(start.elapsed());
        let Some(left) = left else { return Err(fail("timed out".into(), &seen)) };
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(chunk) => {
                log.write_all(&chunk).map_err(io(format!("writing {}", log_path.display())))?;
                if o.echo {
                    let _ = std::io::stdout().write_all(&chunk);
                    let _ = std::io::stdout().flush();
                }
                seen.extend_from_slice(&chunk);
                let text = String::from_utf8_lossy(&seen);
                if text.contains(&expect) {
                    return Ok(BootReport { marker: expect.clone(), seconds: start.elapsed().as_secs_f64(), accel, log: log_path.clone() });
                }
                if text.contains("Kernel panic") {
                    std::thread::sleep(Duration::from_millis(300));
                    while let Ok(c) = rx.try_recv() {
                        seen.extend_from_slice(&c);
                    }
                    return Err(fail("kernel panic".into(), &seen));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let mut err = String::new();
                if let Some(mut e) = child.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                seen.extend_from_slice(err.as_bytes());
                let st = child.0.wait().ok().map(|s| s.to_string()).unwrap_or_default();
                return Err(fail(format!("qemu exited ({st})"), &seen));
            }
        }
    }
}
