//! Booted machines, driven as a VPC user drives them: qemu (TCG) on a
//! copy-on-write overlay of an image (a qcow2 whose backing file is the raw
//! image, so N machines cost one image on disk), with a config drive, a NIC
//! on qemu's user network and one `hostfwd` to the guest's port 22. The
//! test logs in over SSH with the key that the config drive handed to the
//! machine; there is no other way in.
//!
//! Machines share a private network through a [`Switch`] (a second NIC
//! each, with the static address its `network_data.json` gives).
//!
//! A [`Machine`] (and a [`Switch`]) is killed when dropped, so a failing
//! test leaves no qemu behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An ed25519 key pair made with `ssh-keygen` in a test's folder.
pub struct SshKey {
    pub private: PathBuf,
    /// The `.pub` line, for `meta_data.json`'s `public_keys`.
    pub public: String,
}

impl SshKey {
    pub fn new(dir: &Path) -> SshKey {
        let private = dir.join("id_ed25519");
        let _ = fs::remove_file(&private);
        let _ = fs::remove_file(dir.join("id_ed25519.pub"));
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "build-image-tests", "-f"])
            .arg(&private)
            .output()
            .expect("running ssh-keygen (./build.sh deps installs openssh-client)");
        assert!(o.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
        let public = fs::read_to_string(dir.join("id_ed25519.pub")).unwrap().trim().to_string();
        SshKey { private, public }
    }
}

/// How the machine starts: OVMF (UEFI) or qemu's SeaBIOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    Bios,
}

/// What to start.
pub struct Spec<'a> {
    /// A name for logs and files (`serial-NAME.log`).
    pub name: &'a str,
    /// The raw image; the machine writes to its own overlay only.
    pub image: &'a Path,
    pub firmware: Firmware,
    /// The virtual disk's size (the overlay's), e.g. "4G"; the image's
    /// root grows into it when the recipe says `grow`.
    pub disk_size: &'a str,
    /// A config drive image (attached read-only, virtio).
    pub config_drive: Option<&'a Path>,
    /// The NIC's MAC on the user network.
    pub mac: &'a str,
    /// The guest address that `hostfwd` forwards port 22 to (10.0.2.15 for
    /// qemu's DHCP, or the static address of `network_data.json`).
    pub guest_ip: &'a str,
    /// The guest's SSH port (22 unless a config moves it).
    pub guest_port: u16,
    /// Options for qemu's user network (`net=10.11.12.0/24,host=10.11.12.1`
    /// for a guest outside qemu's default 10.0.2.0/24); empty for the default.
    pub user_net: &'a str,
    pub memory_mib: u32,
    /// More qemu arguments (NICs on other networks, drives).
    pub extra: Vec<String>,
}

/// A private L2 network between machines: Debian's `vde_switch` on a unix
/// socket in the test's folder (no multicast, no tap, no root). Each
/// machine plugs a NIC into it with [`Switch::nic`]. The switch ends when
/// dropped (killed, and its console's stdin closes, on which it exits too).
pub struct Switch {
    child: Child,
    _stdin: std::process::ChildStdin,
    pub sock: PathBuf,
}

impl Switch {
    pub fn start(dir: &Path) -> Switch {
        let sock = dir.join("vde.ctl");
        let log = fs::File::create(dir.join("vde_switch.log")).unwrap();
        let mut child = Command::new("vde_switch")
            .arg("--sock")
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("vde_switch (./build.sh deps installs vde2)");
        let stdin = child.stdin.take().unwrap();
        let t = Instant::now();
        while !sock.join("ctl").exists() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("vde_switch exited ({st}): {}", fs::read_to_string(dir.join("vde_switch.log")).unwrap_or_default());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "vde_switch made no {} in 20 s", sock.join("ctl").display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Switch { child, _stdin: stdin, sock }
    }

    /// qemu arguments for a virtio NIC with `mac` on this switch.
    pub fn nic(&self, id: &str, mac: &str) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!("vde,id={id},sock={}", self.sock.display()),
            "-device".into(),
            format!("virtio-net-pci,netdev={id},mac={mac}"),
        ]
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running machine.
pub struct Machine {
    child: Child,
    pub name: String,
    pub serial: PathBuf,
    pub ssh_port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    pub started: Instant,
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Machine {
    /// Make the overlay (and a copy of OVMF's variables for UEFI) in `dir`
    /// and start qemu.
    pub fn start(dir: &Path, spec: &Spec, key: &SshKey) -> Machine {
        let overlay = dir.join(format!("{}.qcow2", spec.name));
        let _ = fs::remove_file(&overlay);
        let o = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(fs::canonicalize(spec.image).unwrap())
            .arg(&overlay)
            .arg(spec.disk_size)
            .output()
            .expect("qemu-img");
        assert!(o.status.success(), "qemu-img create: {}", String::from_utf8_lossy(&o.stderr));
        if spec.firmware == Firmware::Uefi {
            let vars = dir.join(format!("{}-OVMF_VARS.fd", spec.name));
            fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF (./build.sh deps installs ovmf)");
        }
        Self::launch(dir, spec, key, 1)
    }

    /// Start the machine again on its overlay (and UEFI variables) from an
    /// earlier [`Machine::start`] in `dir`, after it powered off: its
    /// `boot`-th boot, with a console log of its own.
    pub fn start_again(dir: &Path, spec: &Spec, key: &SshKey, boot: u32) -> Machine {
        Self::launch(dir, spec, key, boot)
    }

    /// Wait for qemu to exit (the guest powered off; machines run with
    /// `-no-reboot`, so a reboot ends qemu too).
    pub fn wait_exit(&mut self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("{}: still running after {} s\n{}", self.name, within.as_secs(), self.tail(40)))
    }

    fn launch(dir: &Path, spec: &Spec, key: &SshKey, boot: u32) -> Machine {
        let overlay = dir.join(format!("{}.qcow2", spec.name));
        let serial =
            if boot == 1 { dir.join(format!("serial-{}.log", spec.name)) } else { dir.join(format!("serial-{}-{boot}.log", spec.name)) };
        let ssh_port = free_port();
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-smp", "2", "-m", &spec.memory_mib.to_string(), "-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        if spec.firmware == Firmware::Uefi {
            let vars = dir.join(format!("{}-OVMF_VARS.fd", spec.name));
            c.arg("-drive").arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
            c.arg("-drive").arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        c.arg("-drive").arg(format!("file={},format=qcow2,if=virtio", overlay.display()));
        if let Some(d) = spec.config_drive {
            c.arg("-drive").arg(format!("file={},format=raw,if=virtio,readonly=on", d.display()));
        }
        let net = if spec.user_net.is_empty() { String::new() } else { format!("{},", spec.user_net) };
        c.arg("-netdev").arg(format!("user,id=n0,{net}hostfwd=tcp:127.0.0.1:{ssh_port}-{}:{}", spec.guest_ip, spec.guest_port));
        c.arg("-device").arg(format!("virtio-net-pci,netdev=n0,mac={}", spec.mac));
        c.args(&spec.extra);
        let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("qemu-system-x86_64");
        Machine {
            child,
            name: spec.name.to_string(),
            serial,
            ssh_port,
            key: key.private.clone(),
            known_hosts: dir.join(format!("known_hosts-{}", spec.name)),
            started: Instant::now(),
        }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the console, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Wait until the console has a line containing one of `any_of`; the
    /// line, or why not (qemu exited, or `within` passed) with the end of
    /// the console.
    pub fn wait_for(&mut self, any_of: &[&str], within: Duration) -> Result<String, String> {
        loop {
            if let Some(line) = self.console().lines().find(|l| any_of.iter().any(|w| l.contains(w))) {
                return Ok(line.to_string());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("{}: qemu exited ({st}) before printing any of {any_of:?}; console:\n{}", self.name, self.tail(60)));
            }
            if self.started.elapsed() > within {
                return Err(format!("{}: none of {any_of:?} on the console within {within:?}; console:\n{}", self.name, self.tail(60)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Run `command` over SSH as `user`: (exit status 0, stdout, stderr).
    /// The host key is whatever the machine made at its first boot; it is
    /// recorded in this machine's own known_hosts file.
    pub fn ssh(&self, user: &str, command: &str) -> (bool, String, String) {
        let o = Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "ServerAliveInterval=10",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.ssh_port.to_string(), &format!("{user}@127.0.0.1"), "--", command])
            .stdin(Stdio::null())
            .output()
            .expect("running ssh (./build.sh deps installs openssh-client)");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// [`Machine::ssh`] that must succeed; its stdout, trimmed.
    pub fn ssh_ok(&self, user: &str, command: &str) -> String {
        let (ok, out, err) = self.ssh(user, command);
        assert!(ok, "{}: ssh {user}@ `{command}` failed:\n{out}{err}\nconsole:\n{}", self.name, self.tail(30));
        out.trim().to_string()
    }

    /// Retry [`Machine::ssh`] until it succeeds (sshd may restart, a link
    /// may come back); the last failure after `within`.
    pub fn ssh_retry(&self, user: &str, command: &str, within: Duration) -> Result<String, String> {
        let t = Instant::now();
        loop {
            let (ok, out, err) = self.ssh(user, command);
            if ok {
                return Ok(out.trim().to_string());
            }
            if t.elapsed() > within {
                return Err(format!("{}: ssh `{command}` kept failing for {within:?}: {out}{err}", self.name));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Copy the host file `local` to `remote` on the machine, as `user`
    /// (`scp`, with this machine's key and known_hosts).
    pub fn copy_to(&self, user: &str, local: &Path, remote: &str) {
        let o = Command::new("scp")
            .args(["-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-i")
            .arg(&self.key)
            .args(["-P", &self.ssh_port.to_string()])
            .arg(local)
            .arg(format!("{user}@127.0.0.1:{remote}"))
            .stdin(Stdio::null())
            .output()
            .expect("running scp (./build.sh deps installs openssh-client)");
        assert!(o.status.success(), "{}: scp {} to {remote}: {}", self.name, local.display(), String::from_utf8_lossy(&o.stderr));
    }

    /// The machine's SSH host keys as the SSH client received them
    /// (`ssh-keyscan`), sorted: "TYPE BASE64" lines.
    pub fn host_keys(&self) -> Vec<String> {
        let o = Command::new("ssh-keyscan")
            .args(["-T", "20", "-t", "ed25519,ecdsa,rsa", "-p", &self.ssh_port.to_string(), "127.0.0.1"])
            .output()
            .expect("ssh-keyscan");
        let mut keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' ').map(|(_, k)| k.to_string()))
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
