//! The PID 1 sequence: system calls and file I/O. See the crate docs for the
//! order of steps and the reasons behind them.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{WaitOptions, WaitStatus};
use rustix::system::RebootCommand;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::cmdline::{self, Cmdline, RootSpec};
use crate::{debug, gpt, log, modules, probe, uevent};

/// `PATH` for every program the agent starts.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the root filesystem is mounted before the switch.
pub const SYSROOT: &str = "/sysroot";
/// The module list the builder writes.
pub const MODULES_LIST: &str = "/etc/agent/modules";
/// The appliance command (argv, one per line) the builder writes.
pub const INIT_FILE: &str = "/etc/agent/init";
const DEFAULT_ROOTWAIT_SECS: u32 = 10;

/// A failed step: what the agent was doing, and why it failed.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub why: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

fn fail(what: impl fmt::Display, why: impl fmt::Display) -> Failure {
    Failure { what: what.to_string(), why: why.to_string() }
}

/// Errno text as `strerror` gives it, plus the number.
fn errno(e: Errno) -> String {
    io::Error::from(e).to_string()
}

/// The whole boot. Never returns: it execs the root's init, powers off, or
/// keeps the machine up after a failure.
pub fn run() -> ! {
    let t0 = Instant::now();
    log!("guest-agent {} starting as PID 1", env!("CARGO_PKG_VERSION"));
    // The kernel gives PID 1 no PATH. Still single-threaded here, so
    // changing the environment is sound; children inherit it.
    std::env::set_var("PATH", PATH);
    install_shutdown_signals();
    if let Err(f) = mount_api_filesystems() {
        emergency(f);
    }
    ensure_console();
    let cmdline_text = fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
        log!("cannot read /proc/cmdline: {e}; using defaults");
        String::new()
    });
    let cmd = Cmdline::parse(&cmdline_text);
    crate::DEBUG.store(cmd.debug, std::sync::atomic::Ordering::Relaxed);
    log!("cmdline: {}", cmdline_text.trim_end());
    debug!("parsed: {cmd:?}");
    set_hostname();
    load_modules();
    log!("early setup done in {} ms", t0.elapsed().as_millis());
    // OEM configuration layers 00–40 (the OEM partition mounted read-only
    // on /usr/share/oem first, if the disk has one).
    mount_oem_partition(&cmd);
    let mut oem = crate::oem::Effective::load(&cmdline_text);
    oem.write();
    match &cmd.root {
        Some(spec) => {
            let f = match boot_root(&cmd, spec, &mut oem) {
                Ok(never) => match never {},
                Err(f) => f,
            };
            emergency(f)
        }
        None => {
            // First-boot grow (`agent.grow=`) of a data partition, mounted
            // for the resize only. Logs and carries on whatever happens.
            crate::grow::run();
            appliance(&cmd, &mut oem)
        }
    }
}

// ---------------------------------------------------------------- mounts

fn mkdir_p(p: &str) -> Result<(), Failure> {
    fs::create_dir_all(p).map_err(|e| fail(format_args!("creating {p}"), e))
}

/// Whether `p` is a mount point: its device differs from its parent's, or it
/// is `/`.
fn is_mount_point(p: &Path) -> bool {
    let (Ok(m), Some(parent)) = (fs::metadata(p), p.parent()) else { return false };
    match fs::metadata(parent) {
        Ok(pm) => m.dev() != pm.dev() || m.ino() == pm.ino(),
        Err(_) => false,
    }
}

fn mount_api_filesystems() -> Result<(), Failure> {
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let table: [(&str, &str, &str, MountFlags, &str); 4] = [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, ""),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, ""),
        ("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID, "mode=0755"),
        ("tmpfs", "/run", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=0755"),
    ];
    for (src, target, fstype, flags, data) in table {
        mkdir_p(target)?;
        if is_mount_point(Path::new(target)) {
            log!("{target} already mounted");
            continue;
        }
        let data = CString::new(data).expect("static mount data");
        match rustix::mount::mount(src, target, fstype, flags, Some(data.as_c_str())) {
            Ok(()) => log!("mounted {target} ({fstype})"),
            Err(Errno::BUSY) => log!("{target} already mounted"),
            Err(e) => return Err(fail(format_args!("mounting {fstype} on {target}"), errno(e))),
        }
    }
    Ok(())
}

/// Give fds 0–2 the console if they are closed or on `/dev/null`. Rarely needed: the kernel
/// opens `/dev/console` (its built-in initramfs has the node) for `/init`,
/// and when it cannot, Rust's runtime puts `/dev/null` on closed fds 0–2
/// before `main` (and aborts if there is no `/dev/null`: see docs/agent.md).
fn ensure_console() {
    let null = rustix::fs::makedev(1, 3);
    let missing: Vec<i32> = (0..3)
        .filter(|&fd| {
            // SAFETY: fds 0–2 are only probed with fstat, not used as owned.
            match rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) }) {
                Err(_) => true,
                Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == null,
            }
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(con) = rustix::fs::open("/dev/console", OFlags::RDWR | OFlags::NOCTTY, Mode::empty()) else { return };
    for fd in &missing {
        let _ = match fd {
            0 => rustix::stdio::dup2_stdin(con.as_fd()),
            1 => rustix::stdio::dup2_stdout(con.as_fd()),
            _ => rustix::stdio::dup2_stderr(con.as_fd()),
        };
    }
    // `con` may itself have landed on one of 0–2; keep it open then.
    if missing.iter().any(|&fd| {
        use rustix::fd::AsRawFd;
        fd == con.as_raw_fd()
    }) {
        std::mem::forget(con);
    }
    log!("opened /dev/console for fds {missing:?}");
}

fn set_hostname() {
    let name = match fs::read_to_string("/etc/hostname") {
        Ok(s) => s.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log!("cannot read /etc/hostname: {e}");
            None
        }
    };
    if let Some(name) = name {
        match rustix::system::sethostname(name.as_bytes()) {
            Ok(()) => log!("hostname set to {name}"),
            Err(e) => log!("setting hostname {name:?} failed: {}", errno(e)),
        }
    }
}

// --------------------------------------------------------------- modules

fn load_modules() {
    let text = match fs::read_to_string(MODULES_LIST) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log!("no {MODULES_LIST}: no modules to load");
            return;
        }
        Err(e) => {
            log!("FAILED to read {MODULES_LIST}: {e}; loading no modules");
            return;
        }
    };
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let list = modules::parse_list(&text);
    let start = Instant::now();
    let (mut loaded, mut failed) = (0, 0);
    // Modules whose hardware this machine does not have (ENODEV: a Hyper-V
    // or Xen driver elsewhere, from `"drivers": "generic"`), and the ones
    // that need them: not loaded, and no failure.
    let mut no_device: Vec<String> = Vec::new();
    for m in &list {
        let name = modules::module_name(&m.path);
        let path = modules::resolve(Path::new("/"), &release, &m.path);
        if !no_device.is_empty() {
            let deps = fs::read(&path).ok().and_then(|elf| modules::modinfo_depends(&elf)).unwrap_or_default();
            if let Some(dep) = deps.iter().find(|d| no_device.contains(d)) {
                log!("{name}: not loaded: it needs {dep}, which has no device here");
                no_device.push(name);
                continue;
            }
        }
        let t = Instant::now();
        match load_one(&path, &m.params) {
            Ok(true) => {
                loaded += 1;
                log!("loaded {name} ({} ms)", t.elapsed().as_millis());
            }
            Ok(false) => debug!("{name} already loaded"),
            Err(LoadError::NoDevice) => {
                log!("{name}: no device for it here (ENODEV): not loaded");
                no_device.push(name);
            }
            Err(LoadError::Failed(why)) => {
                failed += 1;
                log!("FAILED to load {name} ({}, {MODULES_LIST} line {}): {why}", path.display(), m.line);
            }
        }
    }
    let absent = match no_device.len() {
        0 => String::new(),
        n => format!(", {n} without a device here"),
    };
    log!("modules: {loaded} loaded, {failed} failed, {} listed{absent}, {} ms", list.len(), start.elapsed().as_millis());
}

/// Why a module did not load.
enum LoadError {
    /// Its init found no device to drive (ENODEV): not this machine's hardware.
    NoDevice,
    Failed(String),
}

/// `Ok(true)` loaded, `Ok(false)` already there.
fn load_one(path: &Path, params: &str) -> Result<bool, LoadError> {
    if modules::is_compressed(&path.to_string_lossy()) {
        return Err(LoadError::Failed("compressed modules are not supported; the builder must list uncompressed .ko files".into()));
    }
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| LoadError::Failed(errno(e)))?;
    let params = CString::new(params).map_err(|_| LoadError::Failed("parameters contain a NUL byte".into()))?;
    match rustix::system::finit_module(&fd, &params, 0) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(Errno::NODEV) => Err(LoadError::NoDevice),
        Err(e) => Err(LoadError::Failed(errno(e))),
    }
}

// ------------------------------------------------------------ root device

/// A block device as seen in `/sys/class/block`.
struct Block {
    /// The name in `/sys/class/block` (normally = `ue.devname`).
    sys_name: String,
    ue: uevent::BlockUevent,
}

fn scan_blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/class/block") else { return out };
    for e in rd.flatten() {
        let sys_name = e.file_name().to_string_lossy().into_owned();
        if let Some(ue) = fs::read_to_string(e.path().join("uevent")).ok().and_then(|s| uevent::parse(&s)) {
            out.push(Block { sys_name, ue });
        }
    }
    out.sort_by(|a, b| a.sys_name.cmp(&b.sys_name));
    out
}

/// `/dev/<devname>`, created with mknod if devtmpfs has not made it (yet).
fn dev_node(ue: &uevent::BlockUevent) -> Result<PathBuf, Failure> {
    let p = PathBuf::from("/dev").join(&ue.devname);
    if p.exists() {
        return Ok(p);
    }
    if let Some(parent) = p.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let dev = rustix::fs::makedev(ue.major, ue.minor);
    match rustix::fs::mknodat(rustix::fs::CWD, &p, FileType::BlockDevice, Mode::from_raw_mode(0o600), dev) {
        Ok(()) | Err(Errno::EXIST) => {
            log!("created {} ({}:{})", p.display(), ue.major, ue.minor);
            Ok(p)
        }
        Err(e) => Err(fail(format_args!("creating device node {}", p.display()), errno(e))),
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The GPT entries of a whole disk, or `None` if it has no (valid) GPT.
fn disk_gpt(b: &Block) -> Option<Vec<gpt::Entry>> {
    let node = dev_node(&b.ue).ok()?;
    let lbs: u64 = fs::read_to_string(format!("/sys/class/block/{}/queue/logical_block_size", b.sys_name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512);
    let lba1 = read_at(&node, lbs, lbs as usize).ok()?;
    let hdr = gpt::parse_header(&lba1).ok()?;
    let entries = read_at(&node, hdr.entries_lba * lbs, hdr.entries_len()).ok()?;
    gpt::parse_entries(&hdr, &entries).ok()
}

/// The partition `n` of disk `disk`, if the kernel has registered it.
fn partition_of<'a>(blocks: &'a [Block], disk: &Block, n: u32) -> Option<&'a Block> {
    blocks.iter().find(|p| {
        p.ue.is_partition() && p.ue.partn == Some(n) && Path::new("/sys/class/block").join(&disk.sys_name).join(&p.sys_name).exists()
    })
}

fn probe_block(b: &Block) -> Option<probe::FsInfo> {
    let node = dev_node(&b.ue).ok()?;
    probe::probe(&read_at(&node, 0, probe::PROBE_LEN).ok()?)
}

/// One scan for the root device; `None` if it is not there (yet).
fn find_root_once(spec: &RootSpec) -> Result<Option<(PathBuf, Option<probe::FsInfo>)>, Failure> {
    let blocks = scan_blocks();
    let found = match spec {
        RootSpec::Path(p) => {
            let name = p.strip_prefix("/dev/").unwrap_or(p);
            match blocks.iter().find(|b| b.ue.devname == name) {
                Some(b) => Some(b),
                None => {
                    // A node someone else made (no sysfs entry by that name).
                    let path = Path::new(p);
                    if fs::metadata(path).map(|m| FileType::from_raw_mode(m.mode()) == FileType::BlockDevice).unwrap_or(false) {
                        return Ok(Some((path.to_path_buf(), None)));
                    }
                    None
                }
            }
        }
        RootSpec::PartUuid(u) | RootSpec::PartLabel(u) => {
            let by_uuid = matches!(spec, RootSpec::PartUuid(_));
            let uevent_hit =
                blocks.iter().find(|b| if by_uuid { b.ue.partuuid.as_deref() == Some(u) } else { b.ue.partname.as_deref() == Some(u) });
            if let Some(b) = uevent_hit {
                debug!("{spec} found in the uevent of {}", b.sys_name);
            }
            uevent_hit.or_else(|| {
                // Only disks the kernel found partitions on: no reads from
                // empty drives, loop or ram devices.
                let partitioned = |disk: &Block| {
                    blocks
                        .iter()
                        .any(|p| p.ue.is_partition() && Path::new("/sys/class/block").join(&disk.sys_name).join(&p.sys_name).exists())
                };
                blocks.iter().filter(|b| !b.ue.is_partition() && partitioned(b)).find_map(|disk| {
                    let e = disk_gpt(disk)?;
                    debug!("GPT of {}: {} partitions", disk.sys_name, e.len());
                    let e = e.iter().find(|e| if by_uuid { &e.part_guid == u } else { &e.name == u })?;
                    let p = partition_of(&blocks, disk, e.number);
                    debug!("{spec} is partition {} of {} in its GPT: {:?}", e.number, disk.sys_name, p.map(|p| &p.sys_name));
                    p
                })
            })
        }
        RootSpec::Uuid(_) | RootSpec::Label(_) => {
            for b in &blocks {
                let size: u64 = fs::read_to_string(format!("/sys/class/block/{}/size", b.sys_name))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                if size == 0 {
                    continue;
                }
                let probed = probe_block(b);
                debug!("{}: {probed:?}", b.sys_name);
                if let Some(info) = probed {
                    let hit = match spec {
                        RootSpec::Uuid(u) => &info.uuid == u,
                        RootSpec::Label(l) => &info.label == l,
                        _ => false,
                    };
                    if hit {
                        return Ok(Some((dev_node(&b.ue)?, Some(info))));
                    }
                }
            }
            None
        }
    };
    match found {
        Some(b) => {
            let node = dev_node(&b.ue)?;
            let info = probe_block(b);
            Ok(Some((node, info)))
        }
        None => Ok(None),
    }
}

fn wait_for_root(spec: &RootSpec, secs: u32) -> Result<(PathBuf, Option<probe::FsInfo>), Failure> {
    let start = Instant::now();
    let deadline = Duration::from_secs(secs.into());
    let mut said = false;
    loop {
        if let Some(r) = find_root_once(spec)? {
            return Ok(r);
        }
        if start.elapsed() >= deadline {
            let seen: Vec<String> = scan_blocks().into_iter().map(|b| b.ue.devname).collect();
            let seen = if seen.is_empty() { "none".to_string() } else { seen.join(", ") };
            return Err(fail(
                format_args!("finding root {spec}"),
                format_args!(
                    "no such block device after {secs} s (block devices: {seen}); is its driver in {MODULES_LIST}? (agent.rootwait= sets the wait)"
                ),
            ));
        }
        if !said && start.elapsed() >= Duration::from_millis(500) {
            log!("waiting up to {secs} s for root {spec}");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A device as Ignition names it (`/dev/vdb`, `/dev/disk/by-label/L`,
/// `by-uuid`, `by-partlabel`, `by-partuuid`), found the way the root is
/// (there is no udev in the initramfs to make the `/dev/disk` links),
/// waiting up to `secs` for it to appear.
pub fn find_device(device: &str, secs: u32) -> Result<(PathBuf, Option<probe::FsInfo>), String> {
    let spec = if let Some(v) = device.strip_prefix("/dev/disk/by-label/") {
        RootSpec::Label(v.to_string())
    } else if let Some(v) = device.strip_prefix("/dev/disk/by-uuid/") {
        RootSpec::Uuid(v.to_ascii_lowercase())
    } else if let Some(v) = device.strip_prefix("/dev/disk/by-partlabel/") {
        RootSpec::PartLabel(v.to_string())
    } else if let Some(v) = device.strip_prefix("/dev/disk/by-partuuid/") {
        RootSpec::PartUuid(v.to_ascii_lowercase())
    } else if device.starts_with("/dev/disk/") {
        return Err(format!(
            "{device}: this image finds devices by /dev/NAME or /dev/disk/by-{{label,uuid,partlabel,partuuid}}/ (no udev runs before Ignition)"
        ));
    } else {
        RootSpec::Path(device.to_string())
    };
    let start = Instant::now();
    loop {
        if let Some(r) = find_root_once(&spec).map_err(|e| e.to_string())? {
            return Ok(r);
        }
        if start.elapsed() >= Duration::from_secs(secs.into()) {
            let seen: Vec<String> = scan_blocks().into_iter().map(|b| b.ue.devname).collect();
            return Err(format!("{device}: no such block device after {secs} s (block devices: {})", seen.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----------------------------------------------------------- OEM partition

/// Whether the OEM partition is mounted on [`crate::oem::OEM_DIR`].
static OEM_MOUNTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Find the OEM partition and mount it read-only on `/usr/share/oem`. With
/// `/etc/agent/oem-partition` (the builder's word that the disk has one)
/// wait for that device up to `agent.rootwait=` seconds; without it look
/// once for a filesystem labelled `OEM`. Whatever fails is logged and the
/// initramfs's own `/usr/share/oem` and `/etc/agent/oem.json` stay in use.
fn mount_oem_partition(cmd: &Cmdline) {
    use crate::oem::{OEM_DIR, OEM_LABEL, OEM_PARTITION_FILE};
    let t = Instant::now();
    let marker = fs::read_to_string(OEM_PARTITION_FILE).ok().and_then(|s| s.lines().next().and_then(RootSpec::parse));
    let found = match &marker {
        Some(spec) => {
            let secs = cmd.rootwait_secs.unwrap_or(DEFAULT_ROOTWAIT_SECS);
            let deadline = Duration::from_secs(secs.into());
            loop {
                match find_root_once(spec) {
                    Ok(Some(r)) => break Some(r),
                    Ok(None) if t.elapsed() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Ok(None) => {
                        log!("oem: FAILED to find the OEM partition {spec} ({OEM_PARTITION_FILE}) in {secs} s: is the disk driver in {MODULES_LIST}? Using the initramfs's files");
                        break None;
                    }
                    Err(f) => {
                        log!("oem: FAILED looking for the OEM partition {spec}: {f}");
                        break None;
                    }
                }
            }
        }
        None => match find_root_once(&RootSpec::Label(OEM_LABEL.into())) {
            Ok(r) => r,
            Err(f) => {
                log!("oem: looking for a filesystem labelled {OEM_LABEL}: {f}");
                None
            }
        },
    };
    let Some((dev, info)) = found else {
        if marker.is_none() {
            log!("oem: no OEM partition (no filesystem labelled {OEM_LABEL}): configuration from the initramfs");
        }
        return;
    };
    if let Err(f) = mkdir_p(OEM_DIR) {
        log!("oem: {f}");
        return;
    }
    let types: Vec<&str> = match info.as_ref().map(|i| i.fstype) {
        Some(t) => vec![t],
        None => vec!["ext4", "btrfs", "vfat"],
    };
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    let mut errs = Vec::new();
    for t in &types {
        // vfat's default iocharset may be one whose nls module is not
        // loaded; utf8 is the one the builder adds.
        let datas: &[&str] = if *t == "vfat" { &["", "iocharset=utf8"] } else { &[""] };
        for d in datas {
            let c = CString::new(*d).expect("static mount data");
            match rustix::mount::mount(dev.as_path(), OEM_DIR, *t, flags, Some(c.as_c_str())) {
                Ok(()) => {
                    OEM_MOUNTED.store(true, Ordering::Relaxed);
                    log!("oem: mounted {} ({t}, ro) on {OEM_DIR}", dev.display());
                    return;
                }
                Err(e) => errs.push(format!("{t}{}: {}", if d.is_empty() { String::new() } else { format!(" {d}") }, errno(e))),
            }
        }
    }
    log!(
        "oem: FAILED to mount the OEM partition {} on {OEM_DIR} ({}); the recipe's kernel.modules need its filesystem (vfat: vfat, nls_cp437, nls_utf8). Using the initramfs's files",
        dev.display(),
        errs.join("; ")
    );
}

/// Before the root switch: move the OEM mount to `/sysroot/usr/share/oem`
/// (made if missing and the root is writable). If there is no place for it,
/// it is unmounted: after the switch nothing could reach it.
fn move_oem_into_root() {
    use crate::oem::OEM_DIR;
    if !OEM_MOUNTED.load(Ordering::Relaxed) {
        return;
    }
    let target = format!("{SYSROOT}{OEM_DIR}");
    if !Path::new(&target).is_dir() {
        if let Err(e) = fs::create_dir_all(&target) {
            log!("oem: {target} is missing and cannot be made ({e}): the OEM partition is not mounted in the root");
            let _ = rustix::mount::unmount(OEM_DIR, UnmountFlags::DETACH);
            return;
        }
    }
    match rustix::mount::mount_move(OEM_DIR, target.as_str()) {
        Ok(()) => log!("oem: moved the OEM partition to {OEM_DIR} in the root"),
        Err(e) => {
            log!("oem: moving {OEM_DIR} to {target} failed ({}): the OEM partition is not mounted in the root", errno(e));
            let _ = rustix::mount::unmount(OEM_DIR, UnmountFlags::DETACH);
        }
    }
}

/// Mount the root on /sysroot; returns the filesystem type that worked.
fn mount_root(dev: &Path, cmd: &Cmdline, info: Option<&probe::FsInfo>) -> Result<String, Failure> {
    mkdir_p(SYSROOT)?;
    let types: Vec<String> = match (&cmd.rootfstype, info) {
        (Some(t), _) => t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        (None, Some(i)) => vec![i.fstype.to_string()],
        (None, None) => ["ext4", "btrfs", "vfat"].map(String::from).to_vec(),
    };
    let flags = if cmd.read_only { MountFlags::RDONLY } else { MountFlags::empty() };
    let data = cmd.rootflags.as_deref().unwrap_or("");
    let cdata = CString::new(data).map_err(|_| fail("rootflags=", "contains a NUL byte"))?;
    let mut errs = Vec::new();
    for t in &types {
        match rustix::mount::mount(dev, SYSROOT, t.as_str(), flags, Some(cdata.as_c_str())) {
            Ok(()) => return Ok(t.clone()),
            Err(e) => {
                let hint = if e == Errno::NODEV { " (filesystem not in this kernel: add its module)" } else { "" };
                errs.push(format!("{t}: {}{hint}", errno(e)));
            }
        }
    }
    Err(fail(
        format_args!("mounting {} on {SYSROOT} ({}, flags {data:?})", dev.display(), if cmd.read_only { "ro" } else { "rw" }),
        errs.join("; "),
    ))
}

/// Whether `path` (absolute, inside `root`) names an executable file,
/// following symlinks (up to 40) as if `root` were `/`.
pub fn exists_in_root(root: &Path, path: &str) -> bool {
    let mut rel = PathBuf::from(path.trim_start_matches('/'));
    for _ in 0..40 {
        let p = root.join(&rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(t) = fs::read_link(&p) else { return false };
                rel = match t.strip_prefix("/") {
                    Ok(abs) => abs.to_path_buf(),
                    Err(_) => rel.parent().unwrap_or(Path::new("")).join(t),
                };
            }
            Ok(m) => return m.is_file() && m.mode() & 0o111 != 0,
            Err(_) => return false,
        }
    }
    false
}

/// Delete the initramfs contents (on the rootfs device only, not crossing
/// into mounts). Returns the number of entries removed.
pub fn delete_tree(dir: &Path, dev: u64) -> usize {
    let mut n = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            n += delete_tree(&p, dev);
            if fs::remove_dir(&p).is_ok() {
                n += 1;
            }
        } else if fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    n
}

/// The running root for provisioning's `storage.filesystems` rule: its
/// device, type, filesystem label and UUID, and its GPT partition's name and
/// unique GUID (from sysfs `uevent` and the disk's GPT).
fn root_fs_info(dev: &Path, fstype: &str, info: Option<&probe::FsInfo>) -> crate::provisioning::RootFs {
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let uevent = fs::read_to_string(format!("/sys/class/block/{name}/uevent")).unwrap_or_default();
    let field = |k: &str| uevent.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").to_string();
    crate::provisioning::RootFs {
        device: dev.display().to_string(),
        fstype: fstype.to_string(),
        label: info.map(|i| i.label.clone()).unwrap_or_default(),
        uuid: info.map(|i| i.uuid.clone()).unwrap_or_default(),
        partlabel: field("PARTNAME="),
        partuuid: field("PARTUUID="),
    }
}

fn boot_root(cmd: &Cmdline, spec: &RootSpec, oem: &mut crate::oem::Effective) -> Result<std::convert::Infallible, Failure> {
    let secs = cmd.rootwait_secs.unwrap_or(DEFAULT_ROOTWAIT_SECS);
    let t = Instant::now();
    let (dev, info) = wait_for_root(spec, secs)?;
    let fstype = mount_root(&dev, cmd, info.as_ref())?;
    log!(
        "root {spec} is {} ({fstype}, {}), found and mounted in {} ms",
        dev.display(),
        if cmd.read_only { "ro" } else { "rw" },
        t.elapsed().as_millis()
    );
    // First-boot grow (`agent.grow=`): partition table, then the mounted
    // filesystem online. Logs and carries on whatever happens.
    crate::grow::run();
    let init = cmd.root_init().to_string();
    if !exists_in_root(Path::new(SYSROOT), &init) {
        let _ = rustix::mount::unmount(SYSROOT, UnmountFlags::DETACH);
        return Err(fail(format_args!("checking the root's init {init}"), format_args!("no executable {init} on {}", dev.display())));
    }
    // Cloud configuration (network; hostname and keys into the root).
    let configured = crate::cloud::run(Path::new(SYSROOT), oem);
    crate::cloud::apply_identity(Path::new(SYSROOT), oem);
    // user_data: Ignition (first boot; a bad config stops here) or cloud-config.
    let root_fs = root_fs_info(&dev, &fstype, info.as_ref());
    let user = oem.config().get("user").and_then(|v| v.as_str()).unwrap_or("core").to_string();
    let hostname = fs::read_to_string(format!("{SYSROOT}/etc/hostname")).ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
    crate::provisioning::run(Path::new(SYSROOT), &root_fs, &user, hostname.as_deref())
        .map_err(|e| fail(format_args!("provisioning from user_data"), e))?;
    let keep_leases = oem.config().get("keep_leases").and_then(|v| v.as_bool()) == Some(true);
    // The network as .network files for the root's systemd-networkd, in
    // /run, which moves into the root below.
    let handover = configured.map(|(a, from)| crate::net::networkd::Handover {
        source: from.to_string(),
        links: a.links,
        dns: a.static_dns,
        domains: Vec::new(),
        keep_leases,
    });
    crate::net::networkd::run(Path::new(SYSROOT), handover.as_ref());
    // DHCP leases: kept by a child process (`keep_leases`), or handed over
    // to the root's own client (logs when the addresses expire).
    if keep_leases {
        crate::net::lease::keep_after_switch();
    } else {
        crate::net::lease::handover();
    }
    move_oem_into_root();
    log!("switching root to {SYSROOT}, exec {init}");
    for m in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{SYSROOT}{m}");
        if Path::new(&target).is_dir() {
            rustix::mount::mount_move(m, target.as_str()).map_err(|e| fail(format_args!("moving {m} to {target}"), errno(e)))?;
        } else {
            log!("{target} missing on the root: unmounting {m} instead of moving it");
            let _ = rustix::mount::unmount(m, UnmountFlags::DETACH);
        }
    }
    rustix::process::chdir(SYSROOT).map_err(|e| fail(format_args!("chdir {SYSROOT}"), errno(e)))?;
    // Free the initramfs (only if / really is the initramfs: ramfs or tmpfs).
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if let (Ok(st), Ok(m)) = (rustix::fs::statfs("/"), fs::symlink_metadata("/")) {
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as i64;
        if magic == RAMFS_MAGIC || magic == TMPFS_MAGIC {
            let t = Instant::now();
            let n = delete_tree(Path::new("/"), m.dev());
            log!("freed the initramfs: {n} entries removed in {} ms", t.elapsed().as_millis());
        }
    }
    rustix::mount::mount_move(".", "/").map_err(|e| fail("moving the new root onto /", errno(e)))?;
    rustix::process::chroot(".").map_err(|e| fail("chroot into the new root", errno(e)))?;
    rustix::process::chdir("/").map_err(|e| fail("chdir / in the new root", errno(e)))?;
    let err = Command::new(&init).args(&cmd.init_args).env("PATH", PATH).exec();
    // The initramfs is gone by now; the emergency shell is the root's own.
    Err(fail(format_args!("exec {init} on the new root"), err))
}

// ------------------------------------------------------------- appliance

fn appliance_argv(cmd: &Cmdline) -> (Vec<String>, &'static str) {
    if let Some(p) = &cmd.agent_init {
        let mut v = vec![p.clone()];
        v.extend(cmd.init_args.iter().cloned());
        return (v, "agent.init=");
    }
    match fs::read_to_string(INIT_FILE) {
        Ok(s) => {
            if let Some(v) = cmdline::parse_argv_file(&s) {
                return (v, INIT_FILE);
            }
            log!("{INIT_FILE} is empty: using /bin/sh");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log!("cannot read {INIT_FILE}: {e}; using /bin/sh"),
    }
    (vec!["/bin/sh".to_string()], "default")
}

/// Start `argv` as a session leader with the console as its controlling
/// terminal (so a shell gets job control and ^C).
fn spawn_on_console(argv: &[String], spec: &crate::runspec::RunSpec) -> io::Result<u32> {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).env("PATH", PATH);
    spec.apply(&mut c);
    // SAFETY: the closure only makes raw system calls (setsid, ioctl), which
    // are async-signal-safe, and allocates nothing.
    unsafe {
        c.pre_exec(|| {
            let _ = rustix::process::setsid();
            let _ = rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0));
            Ok(())
        });
    }
    Ok(c.spawn()?.id())
}

fn describe(st: WaitStatus) -> String {
    if let Some(code) = st.exit_status() {
        format!("exit status {code}")
    } else if let Some(sig) = st.terminating_signal() {
        format!("signal {sig}")
    } else {
        format!("{st:?}")
    }
}

/// A shutdown asked for by signal (the number), 0 = none. busybox
/// `halt`/`poweroff`/`reboot` signal PID 1 with SIGUSR1/SIGUSR2/SIGTERM;
/// Ctrl-Alt-Del arrives as SIGINT once the agent turned CAD off.
static REQUEST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_shutdown_signal(sig: libc::c_int) {
    REQUEST.store(sig, Ordering::Relaxed);
}

/// Catch the shutdown signals (without SA_RESTART, so a blocking `wait`
/// returns EINTR) and let Ctrl-Alt-Del be a signal rather than an instant
/// reset. exec() resets caught signals, so the root's init starts clean.
fn install_shutdown_signals() {
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_shutdown_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                log!("cannot catch signal {sig}: {}", io::Error::last_os_error());
            }
        }
    }
    if let Err(e) = rustix::system::reboot(RebootCommand::CadOff) {
        debug!("reboot(CAD_OFF): {}", errno(e));
    }
}

/// What to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    PowerOff,
    Halt,
    Reboot,
}

fn requested() -> Option<(Shutdown, &'static str)> {
    match REQUEST.load(Ordering::Relaxed) {
        libc::SIGUSR1 => Some((Shutdown::Halt, "SIGUSR1")),
        libc::SIGUSR2 => Some((Shutdown::PowerOff, "SIGUSR2")),
        libc::SIGTERM => Some((Shutdown::Reboot, "SIGTERM")),
        libc::SIGINT => Some((Shutdown::Reboot, "SIGINT (Ctrl-Alt-Del)")),
        _ => None,
    }
}

/// Why [`reap_until`] returned.
enum Ended {
    /// The main process exited.
    Main(WaitStatus),
    /// No children left (the main one was reaped elsewhere).
    NoChildren,
    /// A shutdown signal arrived.
    Request(Shutdown, &'static str),
}

/// Reap children until `main` exits, a shutdown is requested, or (with
/// `None`) no children are left. `wait`, not `waitpid(None)`, which in rustix
/// means "my process group" only.
fn reap_until(main: Option<u32>) -> Ended {
    loop {
        // A signal landing between this check and `wait` blocking is seen at
        // the next child event; a poll loop would close that window at the
        // cost of waking up for nothing.
        if let Some((how, sig)) = requested() {
            return Ended::Request(how, sig);
        }
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) => {
                if Some(pid.as_raw_nonzero().get() as u32) == main {
                    return Ended::Main(st);
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(Errno::CHILD) => return Ended::NoChildren,
            Err(e) => {
                log!("waitpid failed: {}", errno(e));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn appliance(cmd: &Cmdline, oem: &mut crate::oem::Effective) -> ! {
    // Cloud configuration (network, hostname, keys) before the appliance,
    // then the DHCP leases are kept (renewed) while it runs.
    crate::cloud::run(Path::new("/"), oem);
    crate::cloud::apply_identity(Path::new("/"), oem);
    crate::net::lease::start();
    let (argv, from) = appliance_argv(cmd);
    log!("no root= on the cmdline: running the appliance from the initramfs ({from}): {argv:?}");
    let spec = crate::runspec::RunSpec::load().unwrap_or_else(|e| emergency(fail("reading /etc/agent/user", e)));
    if spec != crate::runspec::RunSpec::default() {
        log!("environment {} variable(s), workdir {:?}, user {:?}", spec.env.len(), spec.workdir, spec.user);
    }
    let pid = match spawn_on_console(&argv, &spec) {
        Ok(pid) => pid,
        Err(e) => emergency(fail(format_args!("starting {}", argv[0]), e)),
    };
    log!("started {} as pid {pid}; the agent stays PID 1", argv[0]);
    match reap_until(Some(pid)) {
        Ended::Main(st) => log!("{} exited ({}), powering off", argv[0], describe(st)),
        Ended::NoChildren => log!("{} vanished, powering off", argv[0]),
        Ended::Request(how, sig) => {
            log!("{how:?} requested ({sig})");
            shut_down(how)
        }
    }
    shut_down(Shutdown::PowerOff)
}

/// Stop everything else (TERM, up to 2 s, then KILL), sync, then power off,
/// halt or reboot.
fn shut_down(how: Shutdown) -> ! {
    // SAFETY: kill(2) with pid -1 signals every process but PID 1; no memory
    // is involved.
    if unsafe { libc::kill(-1, libc::SIGTERM) } == 0 {
        log!("sent SIGTERM to the remaining processes");
        let t = Instant::now();
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Err(Errno::CHILD) => break,
                Ok(Some(_)) => continue,
                _ => {}
            }
            if t.elapsed() > Duration::from_secs(2) {
                log!("sending SIGKILL to the processes still there after 2 s");
                // SAFETY: as above.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                while let Ok(Some(_)) = rustix::process::wait(WaitOptions::empty()) {}
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    rustix::fs::sync();
    let cmd = match how {
        Shutdown::PowerOff => RebootCommand::PowerOff,
        Shutdown::Halt => RebootCommand::Halt,
        Shutdown::Reboot => RebootCommand::Restart,
    };
    let e = rustix::system::reboot(cmd).err();
    REQUEST.store(0, Ordering::Relaxed);
    emergency(fail(format_args!("{how:?}"), e.map(errno).unwrap_or_default()))
}

// ------------------------------------------------------------- emergency

/// Report the failure, then keep the machine up: a shell on the console if
/// there is one, otherwise sleep, reaping children forever.
pub fn emergency(f: Failure) -> ! {
    log!("FAILED {f}");
    if Path::new("/bin/sh").exists() {
        log!("starting /bin/sh on the console for inspection; the machine stays up");
        match spawn_on_console(&["/bin/sh".to_string()], &crate::runspec::RunSpec::default()) {
            Ok(pid) => match reap_until(Some(pid)) {
                Ended::Request(how, sig) => {
                    log!("{how:?} requested ({sig})");
                    shut_down(how)
                }
                _ => log!("emergency shell exited; sleeping forever"),
            },
            Err(e) => log!("FAILED starting /bin/sh: {e}; sleeping forever"),
        }
    } else {
        log!("no /bin/sh; sleeping forever");
    }
    loop {
        if let Ended::Request(how, sig) = reap_until(None) {
            log!("{how:?} requested ({sig})");
            shut_down(how)
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn init_lookup_follows_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        let sd = r.join("usr/lib/systemd/systemd");
        fs::write(&sd, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o755)).unwrap();
        // Merged /usr: /sbin -> usr/sbin; /sbin/init -> an absolute path.
        symlink("usr/sbin", r.join("sbin")).unwrap();
        symlink("/usr/lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
        symlink("../lib/systemd/systemd", r.join("usr/sbin/rel-init")).unwrap();
        symlink("/nowhere", r.join("usr/sbin/dangling")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        fs::write(r.join("plain"), "").unwrap();
        assert!(exists_in_root(r, "/sbin/init"));
        assert!(exists_in_root(r, "/usr/sbin/rel-init"));
        assert!(exists_in_root(r, "/usr/lib/systemd/systemd"));
        assert!(!exists_in_root(r, "/sbin/dangling"));
        assert!(!exists_in_root(r, "/loop"));
        assert!(!exists_in_root(r, "/plain"), "not executable");
        assert!(!exists_in_root(r, "/usr/sbin"), "a directory");
        assert!(!exists_in_root(r, "/missing"));
    }

    #[test]
    fn delete_tree_empties_a_directory() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b/c")).unwrap();
        fs::write(r.join("a/b/c/f"), "x").unwrap();
        fs::write(r.join("g"), "y").unwrap();
        symlink("/etc/passwd", r.join("l")).unwrap();
        let dev = fs::metadata(r).unwrap().dev();
        assert_eq!(delete_tree(r, dev), 6);
        assert_eq!(fs::read_dir(r).unwrap().count(), 0);
        // Another device number: nothing is touched.
        fs::write(r.join("g"), "y").unwrap();
        assert_eq!(delete_tree(r, dev.wrapping_add(1)), 0);
        assert!(r.join("g").exists());
    }
}
