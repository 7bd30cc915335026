//! The guest agent (`oem/agent`) booted for real: the Debian bookworm cloud
//! kernel under `qemu-system-x86_64 -accel tcg`, an initramfs made with
//! `cpio -H newc` + gzip whose `/init` is the static agent, busybox for a
//! shell, and the virtio modules in the order `modinfo -F depends` gives.
//!
//! * appliance mode (no `root=`): the marker is printed and qemu powers off
//!   by itself;
//! * root switch: `root=PARTUUID=`/`PARTLABEL=` (found through the GPT),
//!   `root=UUID=` (superblock) and `root=/dev/vda1`, on a GPT disk made with
//!   `mke2fs -d` + `sgdisk`;
//! * failure: an unknown root gives an error line and a usable shell;
//! * the agent and a one-line busybox `/init` boot the same initramfs;
//!   their timing (qemu start → marker, and guest time under `-icount`) is
//!   a benchmark: `bench/agent-boot.sh`.
//!
//! Downloads (`apt-get download`) are cached in the package cache's `debs/` (`~/.cache/build-image`), the
//! extracted packages in `out/cache/agent-test/`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;

const SMOKE: &str = "AGENT-SMOKE-OK";
const SWITCHED: &str = "ROOT-SWITCHED-OK";
const PARTUUID: &str = "6a9b1f2e-0000-4000-8000-00000000abcd";
const FSUUID: &str = "3d0f8a1c-5b7e-4c2a-9e11-0123456789ab";

/// Everything the boots share: kernel, modules, busybox, the agent.
struct Kit {
    vmlinuz: PathBuf,
    release: String,
    /// `.../lib/modules/<release>` of the extracted kernel package.
    modroot: PathBuf,
    busybox: PathBuf,
    /// The stripped static agent.
    agent: PathBuf,
    /// Module paths relative to `modroot`, dependencies first.
    virtio_modules: Vec<String>,
}

fn sh(cmd: &str, cwd: &Path) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).current_dir(cwd).output().expect("running sh");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "`{cmd}` failed in {}:\n{out}", cwd.display());
    out
}

/// A cached `PKG_*.deb` in the package cache's `debs/`, downloaded if absent.
fn cached_deb(pkg: &str) -> PathBuf {
    let dir = cache().join("debs");
    fs::create_dir_all(&dir).unwrap();
    let find = || {
        let mut v: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
            })
            .collect();
        v.sort();
        v.pop()
    };
    if let Some(p) = find() {
        return p;
    }
    sh(&format!("apt-get download {pkg}"), &dir);
    find().unwrap_or_else(|| panic!("apt-get download {pkg} left no .deb in {}", dir.display()))
}

/// The versioned kernel package behind `linux-image-cloud-amd64`.
fn kernel_package() -> String {
    let out = sh("apt-cache depends linux-image-cloud-amd64", Path::new("/"));
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
        .unwrap_or_else(|| panic!("no versioned kernel in:\n{out}"))
        .to_string()
}

/// `dpkg-deb -x` into `out/cache/agent-test/<deb name>/`, once.
fn extracted(deb: &Path) -> PathBuf {
    let dir = root().join("out/cache/agent-test").join(deb.file_stem().unwrap());
    let stamp = dir.join(".extracted");
    if !stamp.exists() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        sh(&format!("dpkg-deb -x '{}' .", deb.display()), &dir);
        fs::write(&stamp, b"").unwrap();
    }
    dir
}

/// Build the static agent as `builder/build.rs` does, into the same folder
/// (`<target>/embedded-agent`) with the same flags, so that it is already
/// there when build-image was built (the LTO build takes a minute); returns
/// a stripped copy.
fn build_agent(dest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target")).join("embedded-agent");
    let st = Command::new(cargo)
        .args(["build", "-q", "--locked", "-p", "guest-agent", "--profile", "agent", "--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(root())
        .status()
        .expect("running cargo build");
    assert!(st.success(), "cargo build of guest-agent failed");
    let bin = target.join("x86_64-unknown-linux-gnu/agent/guest-agent");
    let (_, f) = tool("file", &[bin.to_str().unwrap()]);
    assert!(f.contains("statically linked") || f.contains("static-pie linked"), "agent is not static: {f}");
    let out = dest.join("guest-agent");
    let (ok, o) = tool("strip", &["-o", out.to_str().unwrap(), bin.to_str().unwrap()]);
    assert!(ok, "strip: {o}");
    out
}

/// `name -> path relative to modroot` for every `.ko` in the package.
fn module_index(modroot: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if let Some(stem) = p.file_name().unwrap().to_str().unwrap().strip_suffix(".ko") {
                out.insert(stem.replace('-', "_"), p.strip_prefix(base).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(&modroot.join("kernel"), modroot, &mut m);
    m
}

/// Dependencies first, each module once, from `modinfo -F depends`.
fn module_order(modroot: &Path, wanted: &[&str]) -> Vec<String> {
    let index = module_index(modroot);
    fn visit(name: &str, modroot: &Path, index: &BTreeMap<String, String>, done: &mut Vec<String>, stack: &mut Vec<String>) {
        let rel = index.get(name).unwrap_or_else(|| panic!("module {name} not in the kernel package"));
        if done.contains(rel) {
            return;
        }
        assert!(!stack.contains(&name.to_string()), "module dependency cycle at {name}");
        stack.push(name.to_string());
        let (ok, deps) = tool("modinfo", &["-F", "depends", modroot.join(rel).to_str().unwrap()]);
        assert!(ok, "modinfo {rel}: {deps}");
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), modroot, index, done, stack);
        }
        stack.pop();
        done.push(rel.clone());
    }
    let mut done = Vec::new();
    for w in wanted {
        visit(w, modroot, &index, &mut done, &mut Vec::new());
    }
    done
}

fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        let kpkg = kernel_package();
        let kdir = extracted(&cached_deb(&kpkg));
        let bdir = extracted(&cached_deb("busybox-static"));
        let release = kpkg.strip_prefix("linux-image-").unwrap().to_string();
        let modroot = kdir.join("lib/modules").join(&release);
        let work = root().join("out/cache/agent-test");
        let virtio_modules = module_order(&modroot, &["virtio_pci", "virtio_blk"]);
        Kit {
            vmlinuz: kdir.join(format!("boot/vmlinuz-{release}")),
            release,
            modroot,
            busybox: bdir.join("bin/busybox"),
            agent: build_agent(&work),
            virtio_modules,
        }
    })
}

fn write_exec(p: &Path, body: &str) {
    fs::write(p, body).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// What `/init` of the test initramfs is.
enum Init<'a> {
    /// The agent, with `/etc/agent/init` = these lines (if any) and the
    /// virtio modules in `/etc/agent/modules` (if `modules`).
    Agent { argv: Option<&'a [&'a str]>, modules: bool },
    /// A shell script (the baseline).
    Script(&'a str),
}

/// Stage and pack an initramfs (`cpio -o -H newc | gzip`) at `dir/initrd.gz`.
fn initramfs(dir: &Path, init: Init<'_>) -> PathBuf {
    let k = kit();
    let st = dir.join("initramfs");
    let _ = fs::remove_dir_all(&st);
    for d in ["bin", "etc/agent", "dev", "proc", "sys", "run"] {
        fs::create_dir_all(st.join(d)).unwrap();
    }
    fs::copy(&k.busybox, st.join("bin/busybox")).unwrap();
    symlink("busybox", st.join("bin/sh")).unwrap();
    fs::write(st.join("etc/hostname"), "agent-test\n").unwrap();
    // The modules are always there, so the initramfs sizes stay comparable.
    let mut list = String::new();
    for rel in &k.virtio_modules {
        let to = st.join("lib/modules").join(&k.release).join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(k.modroot.join(rel), &to).unwrap();
        list += &format!("{rel}\n");
    }
    match init {
        Init::Agent { argv, modules } => {
            fs::copy(&k.agent, st.join("init")).unwrap();
            if modules {
                fs::write(st.join("etc/agent/modules"), list).unwrap();
            }
            if let Some(argv) = argv {
                fs::write(st.join("etc/agent/init"), argv.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
            }
        }
        Init::Script(body) => write_exec(&st.join("init"), body),
    }
    let out = dir.join("initrd.gz");
    sh(&format!("find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'", out.display()), &st);
    out
}

/// What one qemu run showed.
struct Boot {
    /// Serial console output.
    output: String,
    /// qemu start → the marker line, if it appeared.
    marker_at: Option<Duration>,
    /// qemu exited by itself (power off) before the timeout.
    exited: bool,
}

/// Whether `out` has a line that is exactly `marker` (log lines that merely
/// mention it do not count).
fn has_line(out: &str, marker: &str) -> bool {
    out.lines().any(|l| l.trim_end_matches('\r') == marker)
}

/// One boot at a time: the machine has two shared cores, and timings are
/// only comparable without a neighbour.
static QEMU: Mutex<()> = Mutex::new(());

/// Boot under TCG; stop at `timeout`. After `type_after` shows up on the
/// console, `typed` is sent to the serial input.
fn boot(initrd: &Path, append: &str, disk: Option<&Path>, marker: &str, timeout: Duration, typed: Option<(&str, &str)>) -> Boot {
    boot_with(&[], initrd, append, disk, marker, timeout, typed)
}

/// [`boot`] with extra qemu arguments.
fn boot_with(
    extra: &[&str],
    initrd: &Path,
    append: &str,
    disk: Option<&Path>,
    marker: &str,
    timeout: Duration,
    typed: Option<(&str, &str)>,
) -> Boot {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let k = kit();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .args(extra)
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    if let Some(d) = disk {
        c.arg("-drive").arg(format!("file={},if=virtio,format=raw", d.display()));
    }
    let start = Instant::now();
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-system-x86_64 (./build.sh deps installs qemu-system-x86)");
    let out = Arc::new(Mutex::new((String::new(), None::<Duration>)));
    let reader = {
        let out = out.clone();
        let mut so = child.stdout.take().unwrap();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = so.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut g = out.lock().unwrap();
                g.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                if g.1.is_none() && has_line(&g.0, &marker) {
                    g.1 = Some(start.elapsed());
                }
            }
        })
    };
    // Kept open for the whole run: qemu's serial input.
    let mut stdin = child.stdin.take().unwrap();
    let mut typed = typed;
    let mut exited = false;
    while start.elapsed() < timeout {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        if let Some((after, text)) = typed {
            if out.lock().unwrap().0.contains(after) {
                // Give the shell a moment to reach its prompt.
                std::thread::sleep(Duration::from_millis(500));
                stdin.write_all(text.as_bytes()).unwrap();
                typed = None;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    reader.join().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let g = out.lock().unwrap();
    Boot { output: format!("{}{}", g.0, err), marker_at: g.1, exited }
}

const APPEND: &str = "console=ttyS0 panic=-1";

#[test]
fn appliance_mode_runs_the_command_and_powers_off() {
    let t = tempfile::tempdir().unwrap();
    let initrd = initramfs(t.path(), Init::Agent { argv: Some(&["/bin/sh", "-c", &format!("echo {SMOKE}")]), modules: true });
    let b = boot(&initrd, APPEND, None, SMOKE, Duration::from_secs(60), None);
    assert!(b.marker_at.is_some(), "no {SMOKE} line on the console:\n{}", b.output);
    assert!(b.exited, "qemu did not power off within 60 s:\n{}", b.output);
    for line in [
        "mounted /proc (proc)",
        "mounted /dev (devtmpfs)",
        "hostname set to agent-test",
        "loaded virtio_blk (",
        "modules: 6 loaded, 0 failed, 6 listed",
        "the agent stays PID 1",
        "exited (exit status 0), powering off",
    ] {
        assert!(b.output.contains(line), "missing `{line}` in:\n{}", b.output);
    }
    assert!(!b.output.contains("FAILED"), "{}", b.output);
}

/// Orphans are re-parented to the agent and reaped; what still runs when
/// the main command exits is stopped before the power-off.
#[test]
fn appliance_mode_reaps_orphans_and_stops_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let script = "B=/bin/busybox; ($B sleep 0.2 &); ($B sleep 0.2 &); $B sleep 1; \
                  echo ZOMBIES=$($B ps -o stat | $B grep -c Z); $B sleep 100 & echo LEFT-RUNNING";
    let initrd = initramfs(t.path(), Init::Agent { argv: Some(&["/bin/sh", "-c", script]), modules: false });
    let b = boot(&initrd, APPEND, None, "LEFT-RUNNING", Duration::from_secs(60), None);
    assert!(b.marker_at.is_some(), "the command did not finish:\n{}", b.output);
    assert!(has_line(&b.output, "ZOMBIES=0"), "orphans were not reaped:\n{}", b.output);
    assert!(b.output.contains("sent SIGTERM to the remaining processes"), "{}", b.output);
    assert!(b.exited, "no power off with a leftover process:\n{}", b.output);
}

/// busybox `poweroff` (no `-f`) signals PID 1 (SIGUSR2): the agent stops
/// the still-running command and powers off.
#[test]
fn appliance_mode_honours_busybox_poweroff() {
    let t = tempfile::tempdir().unwrap();
    let script = "echo ASKING; /bin/busybox poweroff; /bin/busybox sleep 30; echo NOT-REACHED";
    let initrd = initramfs(t.path(), Init::Agent { argv: Some(&["/bin/sh", "-c", script]), modules: false });
    let b = boot(&initrd, APPEND, None, "ASKING", Duration::from_secs(25), None);
    assert!(b.output.contains("PowerOff requested (SIGUSR2)"), "no shutdown request seen:\n{}", b.output);
    assert!(b.exited && !has_line(&b.output, "NOT-REACHED"), "no power off on request:\n{}", b.output);
}

/// An ext4 root with busybox and an `/sbin/init` that prints the marker, in
/// partition 1 of a GPT disk.
fn root_disk(dir: &Path) -> PathBuf {
    let k = kit();
    let r = dir.join("rootfs");
    for d in ["bin", "sbin", "dev", "proc", "sys", "run", "tmp"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy(&k.busybox, r.join("bin/busybox")).unwrap();
    symlink("busybox", r.join("bin/sh")).unwrap();
    write_exec(
        &r.join("sbin/init"),
        &format!(
            "#!/bin/sh\necho \"init is pid $$, / is $(/bin/busybox stat -f -c %T /)\"\necho {SWITCHED}\nexec /bin/busybox poweroff -f\n"
        ),
    );
    let fsimg = dir.join("fs.img");
    let (ok, o) =
        tool("mke2fs", &["-q", "-t", "ext4", "-U", FSUUID, "-L", "agentroot", "-d", r.to_str().unwrap(), fsimg.to_str().unwrap(), "16M"]);
    assert!(ok, "mke2fs: {o}");
    let disk = dir.join("disk.img");
    fs::File::create(&disk).unwrap().set_len(20 << 20).unwrap();
    let (ok, o) = tool("sgdisk", &["-n", "1:2048:0", "-u", &format!("1:{PARTUUID}"), "-c", "1:root", disk.to_str().unwrap()]);
    assert!(ok, "sgdisk: {o}");
    let data = fs::read(&fsimg).unwrap();
    {
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new().write(true).open(&disk).unwrap().write_all_at(&data, 1 << 20).unwrap();
    }
    let (ok, o) = tool("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(ok && o.contains("No problems found"), "sgdisk -v: {o}");
    disk
}

#[test]
fn switches_root_by_partuuid_uuid_partlabel_and_path() {
    let t = tempfile::tempdir().unwrap();
    let disk = root_disk(t.path());
    let initrd = initramfs(t.path(), Init::Agent { argv: None, modules: true });
    let cases = [
        (
            format!("root=PARTUUID={} agent.debug {APPEND}", PARTUUID.to_uppercase()),
            format!("root PARTUUID={PARTUUID} is /dev/vda1 (ext4, ro)"),
        ),
        (format!("root=UUID={FSUUID} rootfstype=ext4 rw {APPEND}"), format!("root UUID={FSUUID} is /dev/vda1 (ext4, rw)")),
        (format!("root=PARTLABEL=root agent.init=/sbin/init {APPEND}"), "root PARTLABEL=root is /dev/vda1 (ext4, ro)".into()),
        // btrfs is a module that is not loaded: ENODEV, then ext4 works.
        (format!("root=/dev/vda1 rootfstype=btrfs,ext4 {APPEND}"), "root /dev/vda1 is /dev/vda1 (ext4, ro)".into()),
    ];
    for (append, expect) in cases {
        let b = boot(&initrd, &append, Some(&disk), SWITCHED, Duration::from_secs(60), None);
        assert!(b.marker_at.is_some(), "no {SWITCHED} with `{append}`:\n{}", b.output);
        assert!(b.exited, "qemu did not power off with `{append}`:\n{}", b.output);
        for line in [expect.as_str(), "switching root to /sysroot, exec /sbin/init", "freed the initramfs", "init is pid 1, / is ext2/ext3"]
        {
            assert!(b.output.contains(line), "missing `{line}` with `{append}`:\n{}", b.output);
        }
        if append.contains("agent.debug") {
            // The kernel does not put PARTUUID in the uevent: the GPT was read.
            let line = format!("PARTUUID={PARTUUID} is partition 1 of vda in its GPT");
            assert!(b.output.contains(&line), "missing `{line}`:\n{}", b.output);
        }
    }
}

#[test]
fn missing_root_reports_and_keeps_a_shell() {
    let t = tempfile::tempdir().unwrap();
    let initrd = initramfs(t.path(), Init::Agent { argv: None, modules: true });
    let append = format!("root=PARTUUID=00000000-1111-2222-3333-444444444444 agent.rootwait=1 {APPEND}");
    // `poweroff` without -f: the agent, still PID 1, does the power-off.
    let typed = "echo SHELL-$((40+2))\n/bin/busybox poweroff\n";
    let b = boot(&initrd, &append, None, "SHELL-42", Duration::from_secs(60), Some(("starting /bin/sh on the console", typed)));
    assert!(
        b.output.contains("FAILED finding root PARTUUID=00000000-1111-2222-3333-444444444444: no such block device after 1 s"),
        "no failure line:\n{}",
        b.output
    );
    assert!(b.marker_at.is_some(), "the emergency shell did not answer:\n{}", b.output);
    assert!(b.exited, "the emergency shell did not power off:\n{}", b.output);
    assert!(b.output.contains("PowerOff requested (SIGUSR2)"), "{}", b.output);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The agent (with and without loading the 6 virtio modules) and a
/// one-line busybox `/init` in the same initramfs, on the same kernel: each
/// prints the marker and powers off, and the guest time each takes is
/// printed (`--nocapture`). Times are figures, not assertions: the bench
/// (`bench/agent-boot.sh`) compares them with the target.
#[test]
fn agent_and_busybox_init_boot_alike() {
    timing(0);
}

/// qemu start → marker, in host wall-clock rounds (`AGENT_TIMING_ROUNDS`,
/// default 5) and in guest time, for `bench/agent-boot.sh`.
#[test]
#[ignore = "a benchmark: bench/agent-boot.sh"]
fn timing_against_a_busybox_init() {
    let rounds = std::env::var("AGENT_TIMING_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let (busybox, agent) = timing(rounds);
    // The target: the agent (modules aside, which any init must load) adds
    // at most 0.3 s of guest time to the whole boot, initramfs unpacking
    // included.
    let overhead = agent - busybox;
    let verdict = if overhead <= 0.3 { "within" } else { "OVER" };
    eprintln!("agent overhead (guest time, kernel start to power off): {overhead:+.3} s, {verdict} the +0.300 s target");
}

/// Boots each variant `rounds` times (wall clock, round-robin), then once
/// under `-icount`; prints the figures and returns the guest times at power
/// off of the busybox `/init` and of the agent without modules.
fn timing(rounds: usize) -> (f64, f64) {
    let t = tempfile::tempdir().unwrap();
    let argv: &[&str] = &["/bin/sh", "-c", "echo AGENT-SMOKE-OK"];
    let variants = [
        ("busybox /init script", Init::Script("#!/bin/sh\necho AGENT-SMOKE-OK\nexec /bin/busybox poweroff -f\n")),
        ("agent, no modules", Init::Agent { argv: Some(argv), modules: false }),
        ("agent + 6 virtio modules", Init::Agent { argv: Some(argv), modules: true }),
    ];
    let initrds: Vec<_> = variants
        .into_iter()
        .enumerate()
        .map(|(i, (name, init))| {
            let d = t.path().join(i.to_string());
            fs::create_dir_all(&d).unwrap();
            (name, initramfs(&d, init))
        })
        .collect();
    // Round-robin, so that load from elsewhere on the machine spreads over
    // all variants alike.
    let mut times = vec![Vec::new(); initrds.len()];
    for _ in 0..rounds {
        for (i, (name, initrd)) in initrds.iter().enumerate() {
            let b = boot(initrd, APPEND, None, SMOKE, Duration::from_secs(60), None);
            let at = b.marker_at.unwrap_or_else(|| panic!("{name}: no marker:\n{}", b.output));
            assert!(b.exited, "{name}: no power off:\n{}", b.output);
            times[i].push(at.as_secs_f64());
        }
    }
    if rounds > 0 {
        let mut results = Vec::new();
        for ((name, initrd), mut v) in initrds.iter().zip(times) {
            let min = v.iter().cloned().fold(f64::MAX, f64::min);
            results.push((name, min, median(&mut v), fs::metadata(initrd).unwrap().len()));
        }
        eprintln!("qemu start -> {SMOKE} ({rounds} rounds, TCG):");
        for (name, min, med, size) in &results {
            eprintln!(
                "  {name:<26} min {min:.3} s  median {med:.3} s  ({:+.3} s min, {:+.3} s median)  initrd {size} bytes",
                min - results[0].1,
                med - results[0].2
            );
        }
    }

    // The same boots with `-icount shift=0,sleep=off`: the guest clock then
    // counts instructions (1 per ns), so the kernel's own timestamps measure
    // the work done, whatever the load on the host. One round suffices: the
    // figures repeat to the microsecond.
    let stamp = |out: &str, what: &str| -> f64 {
        let l = out.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no `{what}` in:\n{out}"));
        l[l.find('[').unwrap() + 1..l.find(']').unwrap()].trim().parse().unwrap()
    };
    let mut guest = Vec::new();
    for (name, initrd) in &initrds {
        let b = boot_with(&["-icount", "shift=0,sleep=off"], initrd, APPEND, None, SMOKE, Duration::from_secs(120), None);
        assert!(b.marker_at.is_some() && b.exited, "{name} (icount): no marker or no power off:\n{}", b.output);
        guest.push((stamp(&b.output, "Run /init as init process"), stamp(&b.output, "reboot: Power down")));
    }
    eprintln!("guest time with -icount shift=0,sleep=off (kernel timestamps):");
    for ((name, _), (init, off)) in initrds.iter().zip(&guest) {
        eprintln!(
            "  {name:<26} /init started {init:.6} s, powered off {off:.6} s: /init to power off {:.3} s, total {:+.3} s vs busybox",
            off - init,
            off - guest[0].1
        );
    }
    (guest[0].1, guest[1].1)
}
