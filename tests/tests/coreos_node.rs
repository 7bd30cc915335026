//! `recipes/coreos-node.json`, the seed's CoreOS host on Debian, as a VPC
//! user gets it:
//!
//! - built from the tests' lock with the network cut off (`unshare -n`,
//!   checked from inside: no route, no link but `lo`), twice, to the same
//!   bytes; the image holds no machine-id and no SSH host keys;
//! - booted twice from that one image at the same time, by UEFI (a static
//!   address from `network_data.json`) and by BIOS (DHCP), each with a
//!   config drive that hands it the test's SSH key; the test logs in as
//!   `core` through a `hostfwd` port, as a user would, and reads: the
//!   system is `running`, every locked package is `ii`, the two machines
//!   have their own machine-id and host keys, modules load for the running
//!   kernel, networkd holds the static address across its own restart;
//! - the seed's own provisioning examples (`tests/seed/`), each on a third
//!   and fourth machine: its Ignition 2.0.0 config (first boot, in the
//!   initramfs) and its `#cloud-config`: hostname `node01`,
//!   `timesyncd.conf`, the static address of its `iface-eth0.network`,
//!   SSH on port 2345 through its `sshd.socket`; the root that the Ignition
//!   example asks to format as Btrfs is kept;
//! - a recipe asking for a package the lock does not have fails before
//!   anything is written, with the `fetch --add-root` command.
//!
//! Needs root (CI): mmdebstrap's root mode in a network namespace and a
//! read-only loop mount of the Btrfs root. As another user it says so and
//! passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::guest::{Firmware, Machine, Spec, SshKey};
use common::*;

const RECIPE: &str = "coreos-node.json";
/// What the recipe's ready unit prints once systemd has no jobs left and
/// no unit failed (and otherwise).
const READY: &str = "coreos-node: READY";
const NOT_READY: &str = "coreos-node: NOT READY";
/// Generous: two TCG machines on a shared 2-core host, Docker and etcd
/// starting in each.
const BOOT_WITHIN: Duration = Duration::from_secs(900);

/// As another user than root these tests say why and pass.
fn skipped_without_root() -> bool {
    if !is_root() {
        eprintln!("coreos_node: skipped: needs root (the build runs mmdebstrap --mode=root in a network namespace)");
    }
    !is_root()
}

fn recipe() -> serde_json::Value {
    serde_json::from_slice(&fs::read(root().join("recipes").join(RECIPE)).unwrap()).unwrap()
}

struct Built {
    dir: PathBuf,
    raw: PathBuf,
    sha256: String,
    /// The locked root set: name → version.
    set: BTreeMap<String, String>,
}

/// A world-readable temp folder inside the project.
fn project_dir() -> tempfile::TempDir {
    let base = root().join("out/test-recipes");
    fs::create_dir_all(&base).unwrap();
    let d = tempfile::tempdir_in(&base).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Build `RECIPE` in `dir` into `dir/out` inside `unshare -n`, checking
/// from inside that the namespace has no route and no link but `lo`.
fn build_offline(dir: &Path, out: &str) -> (PathBuf, String) {
    let script = "cat /proc/net/route > route-$0.txt; cat /proc/net/dev > dev-$0.txt; exec \"$@\"";
    let t = Instant::now();
    let o = Command::new("unshare")
        .args(["-n", "sh", "-c", script, out])
        .arg(bin())
        .args(["-q", "build", RECIPE, "--out", out])
        .current_dir(dir)
        .env("BUILD_IMAGE_CACHE", cache())
        .env_remove("BUILD_IMAGE_LOCK")
        .output()
        .unwrap();
    assert!(o.status.success(), "offline build of {RECIPE}:\n{}", String::from_utf8_lossy(&o.stderr));
    let route = fs::read_to_string(dir.join(format!("route-{out}.txt"))).unwrap();
    assert!(route.lines().skip(1).all(|l| l.trim().is_empty()), "the build's network namespace has routes: {route}");
    let dev = fs::read_to_string(dir.join(format!("dev-{out}.txt"))).unwrap();
    let links: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(links, ["lo"], "the build's network namespace has links: {dev}");
    let raw = dir.join(out).join("coreos-node.raw");
    let sha = sha256(&raw);
    eprintln!("coreos_node: built {} offline in {:.1} s: sha256 {sha}", raw.display(), t.elapsed().as_secs_f64());
    (raw, sha)
}

/// The recipe built from the tests' lock (shared by the tests here); the
/// project folder is removed at exit.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = remove_at_exit(project_dir().keep());
        fs::copy(lock_path(), dir.join("packages.lock")).unwrap();
        fs::write(dir.join(RECIPE), serde_json::to_string_pretty(&recipe()).unwrap()).unwrap();
        let lock: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("packages.lock")).unwrap()).unwrap();
        let mut names: Vec<String> = recipe()["trees"]["root"][0]["debian"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        names.sort();
        let key = names.join(",");
        let members: BTreeSet<&str> = lock["roots"][&key]
            .as_array()
            .unwrap_or_else(|| panic!("{} has no roots[{key}]: pin it with `build-image fetch --add-root {key}`", lock_path().display()))
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let set: BTreeMap<String, String> = lock["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| members.contains(p["name"].as_str().unwrap()))
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(set.len(), members.len(), "every member of the root set is locked");
        let (raw, sha256) = build_offline(&dir, "out-a");
        Built { dir, raw, sha256, set }
    })
}

/// The Btrfs root partition of `raw`: (offset, size).
fn root_partition(raw: &Path) -> (u64, u64) {
    let parts = sfdisk(raw);
    let (_, _, off, size) = parts.iter().find(|p| p.0 == "root").expect("a root partition");
    (*off, *size)
}

/// A read-only loop mount of the Btrfs root, unmounted on drop.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(image: &Path, offset: u64, size: u64) -> Mount {
        let d = tempfile::tempdir().unwrap();
        let opts = format!("ro,loop,offset={offset},sizelimit={size}");
        let o = Command::new("mount").args(["-t", "btrfs", "-o", &opts]).arg(image).arg(d.path()).output().unwrap();
        assert!(o.status.success(), "mount -o {opts}: {}", String::from_utf8_lossy(&o.stderr));
        Mount(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.path().join(p.trim_start_matches('/'))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn builds_offline_twice_to_the_same_bytes_without_identity() {
    if !is_root() {
        eprintln!("coreos_node: skipped: needs root (mmdebstrap --mode=root in a network namespace, loop mounts)");
        return;
    }
    let b = built();
    let (_, again) = build_offline(&b.dir, "out-b");
    assert_eq!(again, b.sha256, "two offline builds of {RECIPE} differ");
    let _ = fs::remove_dir_all(b.dir.join("out-b"));

    let (off, size) = root_partition(&b.raw);
    let m = Mount::new(&b.raw, off, size);
    assert_eq!(fs::read_to_string(m.path("/etc/machine-id")).unwrap(), "uninitialized\n", "the image's machine-id");
    let keys: Vec<String> = fs::read_dir(m.path("/etc/ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "SSH host keys in the image: {keys:?}");
    // The recipe's user, made by the root's useradd: own group, sudo and
    // docker, a home from /etc/skel; passwordless sudo.
    let passwd = fs::read_to_string(m.path("/etc/passwd")).unwrap();
    let core: Vec<&str> = passwd.lines().find(|l| l.starts_with("core:")).expect("user core").split(':').collect();
    assert_eq!((core[5], core[6]), ("/home/core", "/bin/bash"), "{passwd}");
    let group = fs::read_to_string(m.path("/etc/group")).unwrap();
    for g in ["sudo", "docker"] {
        let line = group.lines().find(|l| l.starts_with(&format!("{g}:"))).unwrap_or_else(|| panic!("no group {g}: {group}"));
        assert!(line.rsplit(':').next().unwrap().split(',').any(|u| u == "core"), "core is not in {g}: {line}");
    }
    {
        use std::os::unix::fs::MetadataExt;
        let home = fs::metadata(m.path("/home/core")).unwrap();
        assert_eq!((home.uid().to_string(), home.gid().to_string()), (core[2].to_string(), core[3].to_string()));
        assert!(m.path("/home/core/.bashrc").is_file());
        let sudoers = fs::metadata(m.path("/etc/sudoers.d/core")).unwrap();
        assert_eq!(sudoers.mode() & 0o7777, 0o440);
    }
    // networkd enabled by `debian.enable`, with its socket (Also=).
    assert!(fs::symlink_metadata(m.path("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")).is_ok());
    assert!(fs::symlink_metadata(m.path("/etc/systemd/system/sockets.target.wants/systemd-networkd.socket")).is_ok());
    let preset = fs::read_to_string(m.path("/etc/systemd/system-preset/80-build-image.preset")).unwrap();
    assert!(preset.lines().any(|l| l == "enable systemd-networkd.service"), "{preset}");
}

/// The machine's `dpkg` database as `name → (status abbreviation, version)`.
fn dpkg_list(m: &Machine) -> BTreeMap<String, (String, String)> {
    m.ssh_ok("core", "dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}\\n'")
        .lines()
        .filter_map(|l| match l.split('|').collect::<Vec<_>>()[..] {
            [status, name, version] => Some((name.to_string(), (status.trim().to_string(), version.to_string()))),
            _ => None,
        })
        .collect()
}

/// What every booted node must show over SSH; returns (machine-id, host keys).
fn check_node(m: &mut Machine, set: &BTreeMap<String, String>) -> (String, Vec<String>) {
    let line = m.wait_for(&[READY, NOT_READY], BOOT_WITHIN).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("coreos_node: {} after {:.0} s: {line}", m.name, m.started.elapsed().as_secs_f64());
    let state = m.ssh_retry("core", "systemctl is-system-running", Duration::from_secs(120)).unwrap_or_else(|e| {
        let failed = m.ssh("core", "systemctl --failed --no-legend --plain; journalctl -b -p warning --no-pager | tail -40");
        panic!("{e}\n{}{}", failed.1, failed.2)
    });
    if state != "running" {
        let (_, failed, _) = m.ssh("core", "systemctl --failed --no-legend --plain; journalctl -b -p warning --no-pager | tail -40");
        panic!("{}: systemctl is-system-running: {state}\n{failed}", m.name);
    }
    assert!(line.contains(READY) && !line.contains(NOT_READY), "{}: {line}", m.name);
    assert_eq!(
        m.ssh_ok("core", "systemctl is-active multi-user.target sshd.socket etcd2.service docker"),
        "active\nactive\nactive\nactive"
    );
    // CoreOS's names: sshd.socket is the listener (not Debian's ssh.service), etcd2 is etcd.
    assert_eq!(m.ssh("core", "systemctl is-enabled ssh.service").1.trim(), "disabled", "{}: ssh.service", m.name);
    assert_eq!(m.ssh("core", "systemctl is-active ssh.service").1.trim(), "inactive", "{}: ssh.service", m.name);
    assert_eq!(m.ssh_ok("core", "systemctl show -P Id etcd2.service"), "etcd.service");
    // Every locked package installed as `ii` at its locked version, and no other.
    let dpkg = dpkg_list(m);
    let wrong: Vec<String> = set
        .iter()
        .filter(|(n, v)| dpkg.get(*n) != Some(&("ii".to_string(), (*v).clone())))
        .map(|(n, v)| format!("{n} {v}: {:?}", dpkg.get(n)))
        .collect();
    assert!(wrong.is_empty(), "{}: not `ii` at the locked version: {wrong:?}", m.name);
    let extra: Vec<&String> = dpkg.keys().filter(|n| !set.contains_key(*n)).collect();
    assert!(extra.is_empty(), "{}: installed but not locked: {extra:?}", m.name);
    // The user: groups, passwordless sudo.
    let groups = m.ssh_ok("core", "id -nG");
    for g in ["core", "sudo", "docker"] {
        assert!(groups.split_whitespace().any(|x| x == g), "{}: core's groups: {groups}", m.name);
    }
    assert_eq!(m.ssh_ok("core", "sudo -n id -u"), "0");
    // Modules for the running kernel.
    let release = m.ssh_ok("core", "uname -r");
    assert_eq!(m.ssh_ok("core", "ls /lib/modules"), release, "{}: /lib/modules vs uname -r", m.name);
    m.ssh_ok("core", "sudo -n modprobe -a overlay vxlan br_netfilter");
    let loaded = m.ssh_ok("core", "cut -d' ' -f1 /proc/modules");
    for module in ["overlay", "vxlan", "br_netfilter"] {
        assert!(loaded.lines().any(|l| l == module), "{}: {module} is not loaded: {loaded}", m.name);
    }
    // etcd answers, Docker's daemon answers (to core, a member of docker).
    let health = m.ssh_ok("core", "etcdctl endpoint health 2>&1");
    assert!(health.contains("is healthy"), "{}: {health}", m.name);
    let docker = m.ssh_ok("core", "docker info --format '{{.ServerVersion}} {{.Driver}} {{.CgroupVersion}}'");
    assert!(docker.ends_with(" 2"), "{}: docker info: {docker}", m.name);
    // Identity made on this machine.
    let id = m.ssh_ok("core", "cat /etc/machine-id");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{}: machine-id {id:?}", m.name);
    let keys = m.host_keys();
    assert!(keys.iter().any(|k| k.starts_with("ssh-ed25519 ")), "{}: host keys {keys:?}", m.name);
    (id, keys)
}

const MAC_A: &str = "52:54:00:c0:00:0a";
const MAC_B: &str = "52:54:00:c0:00:0b";

fn meta_data(name: &str, key: &SshKey) -> String {
    serde_json::json!({
        "uuid": format!("00000000-0000-4000-8000-{:012x}", name.bytes().fold(0u64, |h, b| (h << 8 | b as u64) & 0xffff_ffff_ffff)),
        "name": name,
        "hostname": name,
        "public_keys": { "test": key.public },
    })
    .to_string()
}

#[test]
fn boots_by_uefi_and_bios_and_is_driven_over_ssh() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let t = tempfile::tempdir().unwrap();
    let key = SshKey::new(t.path());
    let (da, db) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir_all(&da).unwrap();
    fs::create_dir_all(&db).unwrap();
    // A: UEFI, a static address from network_data.json, and a `#!`
    // user_data of 10 MiB (a short script and 10 MiB of comments), run once
    // on the booted system. B: BIOS, DHCP, and a #cloud-config with a
    // wrong type and an unknown key: logged by path, the rest applied.
    let mut script = String::from("#!/bin/sh\necho \"ran as $(id -un) on $(hostname)\" > /var/lib/script-ran\n");
    let line = format!("# {}\n", "x".repeat(1021));
    while script.len() < 10 << 20 {
        script.push_str(&line);
    }
    // B's document also carries the seed's `coreos.etcd2` with a
    // `discovery:` URL: a token of size 1 on an etcd that this test runs on
    // the host's loopback, which B reaches at 10.0.2.2 (qemu's user network).
    let disco = DiscoveryEtcd::start(t.path());
    let registry = format!("/v2/keys/_etcd/registry/{DISCOVERY_TOKEN}");
    let (ok, out) = disco.curl(&[&format!("{registry}/_config/size"), "-X", "PUT", "-d", "value=1"]);
    assert!(ok, "setting the discovery size: {out}");
    let cc = format!(
        "#cloud-config\nwrite_files: 5\ncoreos:\n  flannel_typo: 1\n  etcd2:\n    discovery: http://10.0.2.2:{}{registry}\n\
         \x20   advertise-client-urls: http://10.0.2.15:2379\n    initial-advertise-peer-urls: http://10.0.2.15:2380\n\
         \x20   listen-client-urls: http://0.0.0.0:2379\n    listen-peer-urls: http://10.0.2.15:2380\n\
         users:\n  - name: alice\n    ssh_authorized_keys:\n      - {}\n",
        disco.port,
        key.public.trim()
    );
    let drive_a = config_drive(
        &da,
        &[("meta_data.json", &meta_data("node-a", &key)), ("network_data.json", &network_data_static(MAC_A)), ("user_data", &script)],
    );
    let drive_b = config_drive(&db, &[("meta_data.json", &meta_data("node-b", &key)), ("user_data", &cc)]);
    let spec = |name, firmware, drive, mac, ip| Spec {
        name,
        image: &b.raw,
        firmware,
        disk_size: "4G",
        config_drive: Some(drive),
        mac,
        guest_ip: ip,
        guest_port: 22,
        user_net: "",
        memory_mib: 2048,
        extra: vec![],
    };
    let mut a = Machine::start(&da, &spec("node-a", Firmware::Uefi, &drive_a, MAC_A, "10.0.2.77"), &key);
    let mut bm = Machine::start(&db, &spec("node-b", Firmware::Bios, &drive_b, MAC_B, "10.0.2.15"), &key);

    let (id_a, keys_a) = check_node(&mut a, &b.set);
    let (id_b, keys_b) = check_node(&mut bm, &b.set);
    assert_ne!(id_a, id_b, "two machines from one image share a machine-id");
    assert!(keys_a.iter().all(|k| !keys_b.contains(k)), "two machines share an SSH host key: {keys_a:?} / {keys_b:?}");
    assert_eq!(a.ssh_ok("core", "hostname"), "node-a");
    assert_eq!(bm.ssh_ok("core", "hostname"), "node-b");
    // The root grew into the 4 GiB disk.
    let size: u64 = a.ssh_ok("core", "df -B1 --output=size / | tail -1").trim().parse().unwrap();
    assert!(size > 3 << 30, "node-a: / is {size} bytes on a 4 GiB disk");

    // A's 10 MiB script ran once, as root, when the system was up.
    assert_eq!(a.ssh_ok("core", "cat /var/lib/script-ran"), "ran as root on node-a");
    assert_eq!(a.ssh_ok("core", "systemctl show -P Result agent-user-script.service"), "success");
    let record: serde_json::Value = serde_json::from_str(&a.ssh_ok("core", "sudo -n cat /run/agent/provisioning.json")).unwrap();
    assert_eq!((record["kind"].as_str(), record["bytes"].as_u64()), (Some("script"), Some(script.len() as u64)), "{record}");
    let console = a.console();
    let saved: Vec<&str> =
        console.lines().filter(|l| l.contains("user_data from the config drive saved") || l.contains("#! script")).collect();
    assert!(saved.iter().any(|l| l.contains(&format!("({} bytes)", script.len()))), "{saved:?}");
    eprintln!("coreos_node: node-a, 10 MiB user_data: {saved:?}");

    // B's broken cloud-config: its errors on the console by path, its user made.
    assert_eq!(bm.ssh_ok("alice", "id -un"), "alice", "node-b: the user from the broken document");
    let console = bm.console();
    assert!(
        console.lines().any(|l| l.contains("provisioning: cloud-config") && l.contains("write_files")),
        "node-b: the write_files error is not on the console:\n{}",
        bm.tail(80)
    );
    assert!(console.contains("coreos.flannel_typo"), "node-b: the unknown key is not logged by its path:\n{}", bm.tail(80));
    assert!(bm.ssh_ok("core", "sudo -n cat /run/agent/provisioning.json").contains("write_files"));
    // B's etcd bootstrapped from the discovery URL: it registered there
    // under its host name and is the cluster's one member.
    let (ok, reg) = disco.curl(&[&registry]);
    assert!(ok, "{reg}");
    assert!(reg.contains("node-b=http://10.0.2.15:2380"), "node-b is not in the discovery registry: {reg}");
    let list = bm.ssh_ok("core", "etcdctl member list");
    assert!(list.contains(", node-b, http://10.0.2.15:2380,") && list.lines().count() == 1, "node-b: {list}");
    drop(bm);

    // A's static address: networkd configured it, and keeps it across a
    // restart of networkd.
    let addr = |m: &Machine| {
        m.ssh_retry(
            "core",
            "networkctl status eth0 --no-pager; ip -4 -o addr show dev eth0; ip -4 route show default",
            Duration::from_secs(120),
        )
    };
    let before = addr(&a).unwrap();
    assert!(before.contains("State: routable (configured)"), "node-a: networkctl status eth0:\n{before}");
    assert!(before.contains("inet 10.0.2.77/24"), "node-a: {before}");
    assert!(before.contains("default via 10.0.2.2 dev eth0"), "node-a: {before}");
    assert!(before.contains("Network File: /run/systemd/network/10-agent-eth0.network"), "node-a: {before}");
    let invocation = |m: &Machine| m.ssh_ok("core", "systemctl show -P InvocationID systemd-networkd");
    let first = invocation(&a);
    let _ = a.ssh("core", "sudo -n systemctl restart systemd-networkd");
    // networkd reports the link as configuring until it has set it up again.
    a.ssh_retry("core", "sudo -n /lib/systemd/systemd-networkd-wait-online --interface=eth0 --timeout=60", Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("node-a: eth0 is not configured again after networkd's restart: {e}"));
    let after = addr(&a).unwrap();
    assert_ne!(invocation(&a), first, "node-a: systemd-networkd was not restarted");
    assert!(after.contains("State: routable (configured)") && after.contains("inet 10.0.2.77/24"), "node-a after the restart:\n{after}");
    assert!(after.contains("default via 10.0.2.2 dev eth0"), "node-a after the restart: {after}");
}

#[test]
fn a_package_missing_from_the_lock_fails_with_the_fetch_hint_and_writes_nothing() {
    let t = project_dir();
    fs::copy(lock_path(), t.path().join("packages.lock")).unwrap();
    let mut r = recipe();
    r["trees"]["root"][0]["debian"]["packages"].as_array_mut().unwrap().push("tmux".into());
    fs::write(t.path().join(RECIPE), serde_json::to_string_pretty(&r).unwrap()).unwrap();
    let o = cmd().current_dir(t.path()).env_remove("BUILD_IMAGE_LOCK").args(["build", RECIPE, "--out", "out"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a build with an unpinned package succeeded");
    assert!(err.contains("trees.root[0]"), "the error names the layer: {err}");
    assert!(err.contains("tmux") && err.contains("build-image fetch --add-root "), "the error gives the fetch command: {err}");
    assert!(!t.path().join("out").exists(), "the failed build wrote {}", t.path().join("out").display());
}

const MAC_SEED: &str = "52:54:00:c0:00:13";

/// The seed's network: its configs give eth0 10.11.12.13/24 via 10.11.12.1,
/// and so does the VPC's network_data.json here; qemu's user network is
/// moved there so that the address is reachable.
fn seed_network_data() -> String {
    serde_json::json!({
        "links": [{ "id": "tap0", "type": "ovs", "ethernet_mac_address": MAC_SEED, "mtu": 1500 }],
        "networks": [{ "id": "net0", "type": "ipv4", "link": "tap0", "ip_address": "10.11.12.13", "netmask": "255.255.255.0",
            "routes": [{ "network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.11.12.1" }] }],
        "services": [{ "type": "dns", "address": "10.11.12.3" }]
    })
    .to_string()
}

/// Boot a machine with one of the seed's user_data documents and check
/// what the seed says it does: hostname node01, timesyncd.conf, the static
/// address from its iface-eth0.network (networkd's, not the agent's), SSH
/// on port 2345. Returns the console for more checks.
fn boot_seed(b: &Built, name: &str, firmware: Firmware, user_data: &str) -> String {
    let t = tempfile::tempdir().unwrap();
    let key = SshKey::new(t.path());
    let drive = config_drive(
        t.path(),
        &[("meta_data.json", &meta_data(name, &key)), ("network_data.json", &seed_network_data()), ("user_data", user_data)],
    );
    let spec = Spec {
        name,
        image: &b.raw,
        firmware,
        disk_size: "4G",
        config_drive: Some(&drive),
        mac: MAC_SEED,
        guest_ip: "10.11.12.13",
        guest_port: 2345,
        user_net: "net=10.11.12.0/24,host=10.11.12.1,dns=10.11.12.3",
        memory_mib: 2048,
        extra: vec![],
    };
    let mut m = Machine::start(t.path(), &spec, &key);
    // Logged in on port 2345: the seed's sshd.socket replaced the image's.
    let line = wait_running(&mut m);
    assert!(line.contains(READY) && !line.contains(NOT_READY), "{name}: {line}");
    assert_eq!(m.ssh_ok("core", "hostname"), "node01", "{name}: the seed's hostname");
    assert_eq!(
        m.ssh_ok("core", "cat /etc/systemd/timesyncd.conf"),
        "[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org",
        "{name}: the seed's timesyncd.conf"
    );
    let listen = m.ssh_ok("core", "systemctl show -P Listen sshd.socket");
    assert!(listen.contains("2345"), "{name}: sshd.socket listens on {listen}");
    let net = m.ssh_ok("core", "networkctl status eth0 --no-pager; ip -4 -o addr show dev eth0; ip -4 route show default");
    assert!(net.contains("inet 10.11.12.13/24") && net.contains("default via 10.11.12.1"), "{name}: {net}");
    assert!(
        net.contains("State: routable (configured)") && net.contains("iface-eth0.network"),
        "{name}: networkd uses the seed's file:\n{net}"
    );
    let record = m.ssh_ok("core", "cat /run/agent/provisioning.json");
    eprintln!("coreos_node: {name}: /run/agent/provisioning.json:\n{record}");
    m.console()
}

#[test]
fn the_seeds_ignition_example_is_applied_in_the_initramfs() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let ign = fs::read_to_string(root().join("tests/seed/ignition-2.0.0.json")).unwrap();
    let console = boot_seed(b, "seed-ignition", Firmware::Uefi, &ign);
    // The root it asks to format as Btrfs is kept (it is Btrfs and holds the OS).
    assert!(console.contains("is the running root, which is already btrfs: kept as it is, never wiped"), "{console}");
    // cloud-config's keys inside 2.x units are warnings, not errors.
    assert!(console.contains("provisioning: ignition: warning systemd.units[0].command"), "{console}");
    let took: Vec<&str> = console.lines().filter(|l| l.contains("provisioning: ignition: files stage done")).collect();
    eprintln!("coreos_node: seed-ignition: {took:?}");
}

#[test]
fn the_seeds_cloud_config_example_is_applied() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let cc = fs::read_to_string(root().join("tests/seed/cloud-config.yml")).unwrap();
    let console = boot_seed(b, "seed-cloud-config", Firmware::Bios, &cc);
    assert!(console.contains("provisioning: cloud-config applied"), "{console}");
}

/// A machine on qemu's default user network (DHCP, 10.0.2.15), SSH on 22.
fn user_spec<'a>(b: &'a Built, name: &'a str, firmware: Firmware, drive: &'a Path, extra: Vec<String>) -> Spec<'a> {
    Spec {
        name,
        image: &b.raw,
        firmware,
        disk_size: "4G",
        config_drive: Some(drive),
        mac: MAC_B,
        guest_ip: "10.0.2.15",
        guest_port: 22,
        user_net: "",
        memory_mib: 2048,
        extra,
    }
}

/// Wait for the ready line, then for `running` over SSH as `core`.
fn wait_running(m: &mut Machine) -> String {
    let line = m.wait_for(&[READY, NOT_READY], BOOT_WITHIN).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("coreos_node: {} after {:.0} s: {line}", m.name, m.started.elapsed().as_secs_f64());
    let state =
        m.ssh_retry("core", "systemctl is-system-running", Duration::from_secs(180)).unwrap_or_else(|e| panic!("{e}\n{}", m.tail(80)));
    if state != "running" {
        let (_, failed, _) = m.ssh("core", "systemctl --failed --no-legend --plain; journalctl -b -p warning --no-pager | tail -40");
        panic!("{}: systemctl is-system-running: {state}\n{failed}", m.name);
    }
    line
}

/// Ignition with a data volume: a second virtio disk, formatted ext4 by the
/// agent's own writer on the first boot, mounted for the files stage and
/// by the `.mount` unit it writes; a file written there survives a reboot
/// and the second boot does not format it again (same UUID). e2fsck checks
/// the disk between the boots.
#[test]
fn ignition_formats_a_data_disk_that_survives_a_reboot() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let t = tempfile::tempdir().unwrap();
    let key = SshKey::new(t.path());
    let data = t.path().join("data.img");
    fs::File::create(&data).unwrap().set_len(512 << 20).unwrap();
    let ign = serde_json::json!({
        "ignition": { "version": "3.4.0" },
        "storage": {
            "filesystems": [{ "device": "/dev/vdc", "format": "ext4", "label": "data", "path": "/var/lib/data", "wipeFilesystem": true }],
            "files": [{ "path": "/var/lib/data/from-ignition.txt", "mode": 420, "contents": { "source": "data:,written%20by%20Ignition%0A" } }]
        }
    })
    .to_string();
    let drive = config_drive(t.path(), &[("meta_data.json", &meta_data("data-node", &key)), ("user_data", &ign)]);
    let spec =
        user_spec(b, "data-node", Firmware::Uefi, &drive, vec!["-drive".into(), format!("file={},format=raw,if=virtio", data.display())]);
    let mut m = Machine::start(t.path(), &spec, &key);
    wait_running(&mut m);
    let console = m.console();
    assert!(console.contains("(/dev/vdc) formatted as ext4"), "{}", m.tail(80));
    let mounted = m.ssh_ok("core", "findmnt -no SOURCE,FSTYPE,UUID,LABEL /var/lib/data");
    let uuid = mounted.split_whitespace().nth(2).unwrap_or_default().to_string();
    assert!(mounted.starts_with("/dev/vdc ext4 ") && mounted.ends_with(" data"), "first boot: {mounted}");
    assert_eq!(m.ssh_ok("core", "cat /var/lib/data/from-ignition.txt"), "written by Ignition");
    assert_eq!(m.ssh_ok("core", "systemctl is-active var-lib-data.mount"), "active");
    m.ssh_ok("core", "echo kept across a reboot | sudo -n tee /var/lib/data/after-boot.txt >/dev/null && sync");
    let _ = m.ssh("core", "sudo -n systemctl poweroff");
    m.wait_exit(Duration::from_secs(300)).unwrap();
    drop(m);
    let (ok, out) = tool("e2fsck", &["-fn", data.to_str().unwrap()]);
    assert!(ok, "e2fsck -fn on the data disk after the first boot:\n{out}");

    let mut m = Machine::start_again(t.path(), &spec, &key, 2);
    wait_running(&mut m);
    let console = m.console();
    assert!(console.contains("not the first boot"), "the second boot ran Ignition again:\n{}", m.tail(80));
    assert!(!console.contains("formatted as"), "the second boot formatted something:\n{}", m.tail(80));
    let again = m.ssh_ok("core", "findmnt -no SOURCE,FSTYPE,UUID,LABEL /var/lib/data");
    assert_eq!(again.split_whitespace().nth(2), Some(uuid.as_str()), "second boot: {again} (first: {mounted})");
    assert_eq!(
        m.ssh_ok("core", "cat /var/lib/data/after-boot.txt /var/lib/data/from-ignition.txt"),
        "kept across a reboot\nwritten by Ignition"
    );
}

/// An Ignition config that Ignition itself rejects stops the boot in the
/// initramfs, with the JSON path on the console; the OS never starts.
#[test]
fn invalid_ignition_stops_the_boot_with_the_json_path() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let t = tempfile::tempdir().unwrap();
    let key = SshKey::new(t.path());
    let ign = r#"{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "etc/relative", "contents": {"source": "data:,x"}}]}}"#;
    let drive = config_drive(t.path(), &[("meta_data.json", &meta_data("bad-ign", &key)), ("user_data", ign)]);
    let spec = user_spec(b, "bad-ign", Firmware::Bios, &drive, vec![]);
    let mut m = Machine::start(t.path(), &spec, &key);
    let line = m.wait_for(&["FAILED provisioning from user_data", READY], BOOT_WITHIN).unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains("FAILED provisioning from user_data"), "{line}");
    assert!(line.contains("storage.files[0].path"), "no JSON path in: {line}");
    let console = m.console();
    assert!(!console.contains("switching root") && !console.contains("systemd["), "the OS started:\n{}", m.tail(60));
}

// ------------------------------------------------------------ etcd cluster

/// One member of the seed's etcd cluster: its folder, config drive and
/// NICs (qemu's user network for SSH, the VPC's private network).
struct Member {
    name: String,
    dir: PathBuf,
    drive: PathBuf,
    ip: String,
    mac: String,
    /// Options for qemu's user network before its SSH `hostfwd` (more
    /// forwards), or empty.
    user_net: String,
    extra: Vec<String>,
}

impl Member {
    fn spec<'a>(&'a self, b: &'a Built) -> Spec<'a> {
        let mut extra = self.extra.clone();
        // Three machines on two host cores: one vCPU each (the last -smp wins).
        extra.extend(["-smp".to_string(), "1".to_string()]);
        Spec {
            name: &self.name,
            image: &b.raw,
            firmware: Firmware::Bios,
            disk_size: "4G",
            config_drive: Some(&self.drive),
            mac: &self.mac,
            guest_ip: "10.0.2.15",
            guest_port: 22,
            user_net: &self.user_net,
            memory_mib: 1536,
            extra,
        }
    }
}

/// network_data.json of a VPC server with two ports: the user network
/// (static 10.0.2.15, the default route) and the private network
/// (`ip`/24, no gateway), each matched by its MAC.
fn two_port_network_data(user_mac: &str, private_mac: &str, ip: &str) -> String {
    serde_json::json!({
        "links": [
            { "id": "tap0", "type": "ovs", "ethernet_mac_address": user_mac, "mtu": 1500 },
            { "id": "tap1", "type": "ovs", "ethernet_mac_address": private_mac, "mtu": 1500 }
        ],
        "networks": [
            { "id": "net0", "type": "ipv4", "link": "tap0", "ip_address": "10.0.2.15", "netmask": "255.255.255.0",
              "routes": [{ "network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2" }] },
            { "id": "net1", "type": "ipv4", "link": "tap1", "ip_address": ip, "netmask": "255.255.255.0", "routes": [] }
        ],
        "services": [{ "type": "dns", "address": "10.0.2.3" }]
    })
    .to_string()
}

/// The seed's etcd2 cloud-config for the member at `ip`. As in the seed
/// there is no `name:`: etcd's unit names the member after the host name,
/// which the config drive gives. These are etcd-only nodes: Docker and
/// containerd are masked (`coreos.units` `mask: true`), which keeps the
/// cluster's six TCG boots within CI's time (Docker is checked on the
/// other machines). The seed's `discovery:` URL is checked on node-b of
/// `boots_by_uefi_and_bios_and_is_driven_over_ssh`.
fn etcd_cloud_config(ip: &str, cluster: &str) -> String {
    let bootstrap = format!("    initial-cluster: {cluster}\n    initial-cluster-state: new\n    initial-cluster-token: vpc-etcd\n");
    format!(
        "#cloud-config\n\
         coreos:\n  etcd2:\n{bootstrap}\
         \x20   advertise-client-urls: http://{ip}:2379,http://{ip}:4001\n\
         \x20   initial-advertise-peer-urls: http://{ip}:2380\n\
         \x20   listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001\n\
         \x20   listen-peer-urls: http://{ip}:2380\n\
         \x20 units:\n\
         \x20   - name: etcd2.service\n\
         \x20     command: start\n\
         \x20   - name: docker.service\n\
         \x20     mask: true\n\
         \x20   - name: docker.socket\n\
         \x20     mask: true\n\
         \x20   - name: containerd.service\n\
         \x20     mask: true\n"
    )
}

/// Wait until every machine printed its ready line, then until `running`.
fn wait_all_running(ms: &mut [Machine]) {
    for m in ms.iter_mut() {
        let line = wait_running(m);
        assert!(line.contains(READY) && !line.contains(NOT_READY), "{}: {line}", m.name);
    }
}

/// Power a machine off from inside (as a user would) and wait for qemu.
fn power_off(m: &mut Machine) {
    let _ = m.ssh("core", "sudo -n systemctl poweroff");
    m.wait_exit(Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
}

/// The seed's address of member `i` on the private network.
fn private_ip(i: usize) -> String {
    format!("192.168.0.{}", 10 + i)
}

/// `n` members `node00`.., each with its config drive (name, the test's
/// key, two ports, the etcd cloud-config) and a NIC on `switch`.
fn etcd_members(dir: &Path, key: &SshKey, switch: &common::guest::Switch, cluster: &str, n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let (name, ip) = (format!("node0{i}"), private_ip(i));
            let dir = dir.join(&name);
            fs::create_dir_all(&dir).unwrap();
            let (mac, private_mac) = (format!("52:54:00:c1:00:1{i}"), format!("52:54:00:c2:00:1{i}"));
            let drive = config_drive(
                &dir,
                &[
                    ("meta_data.json", &meta_data(&name, key)),
                    ("network_data.json", &two_port_network_data(&mac, &private_mac, &ip)),
                    ("user_data", &etcd_cloud_config(&ip, cluster)),
                ],
            );
            let extra = switch.nic("vpc", &private_mac);
            Member { name, dir, drive, ip, mac, user_net: String::new(), extra }
        })
        .collect()
}

/// Every member's client URL on port 2379 is reported healthy.
fn assert_all_healthy(health: &str, ips: &[String]) {
    for ip in ips {
        assert!(health.contains(&format!("http://{ip}:2379 is healthy")), "member {ip} is not healthy:\n{health}");
    }
}

/// Start the members at once and wait until the cluster is healthy;
/// check the member list (named by host name) and the private addresses.
fn etcd_cold_start(b: &Built, members: &[Member], key: &SshKey, what: &str) -> Vec<Machine> {
    let cold = Instant::now();
    let mut ms: Vec<Machine> = members.iter().map(|m| Machine::start(&m.dir, &m.spec(b), key)).collect();
    wait_all_running(&mut ms);
    let running = cold.elapsed();
    let health = ms[0]
        .ssh_retry("core", "etcdctl endpoint health --cluster 2>&1", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", ms[0].ssh("core", "journalctl -u etcd --no-pager | tail -30").1));
    eprintln!(
        "coreos_node: etcd cluster ({what}): all {} running {:.0} s and healthy {:.0} s after a cold start:\n{health}",
        ms.len(),
        running.as_secs_f64(),
        cold.elapsed().as_secs_f64()
    );
    let ips: Vec<String> = members.iter().map(|m| m.ip.clone()).collect();
    assert_all_healthy(&health, &ips);
    let list = ms[ms.len() - 1].ssh_ok("core", "etcdctl member list");
    for (i, ip) in ips.iter().enumerate() {
        assert!(list.lines().any(|l| l.contains(&format!(", node0{i}, http://{ip}:2380,"))), "node0{i} in the member list:\n{list}");
    }
    // Each node's private address is its own, on the NIC the MAC names.
    for (m, member) in ms.iter().zip(members) {
        let addrs = m.ssh_ok("core", "ip -4 -o addr show");
        assert!(addrs.contains(&format!("inet {}/24", member.ip)), "{}: {addrs}", m.name);
    }
    ms
}

/// The seed's etcd cluster: three machines from one image, started at the
/// same time, each with its own config drive (name, key, a static address
/// on a private network shared by a vde switch) and the seed's `coreos.etcd2`
/// cloud-config with a static initial cluster. Driven over SSH as `core`:
/// all three healthy, a key written on node00 read on node02, node01
/// powered off (reported unhealthy, writes and reads go on), then the other
/// two powered off and all three started again: node01 rejoins with the key
/// written without it, and every key is still on every node (the data is on
/// the Btrfs root).
#[test]
fn the_seeds_etcd_cluster_forms_on_a_private_network_and_survives_a_member_and_reboots() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let t = tempfile::tempdir().unwrap();
    let key = SshKey::new(t.path());
    let switch = common::guest::Switch::start(t.path());
    let cluster: Vec<String> = (0..3).map(|i| format!("node0{i}=http://{}:2380", private_ip(i))).collect();
    let members = etcd_members(t.path(), &key, &switch, &cluster.join(","), 3);
    let ips: Vec<String> = members.iter().map(|m| m.ip.clone()).collect();
    let mut ms = etcd_cold_start(b, &members, &key, "a static initial-cluster");

    // A key put on node00 is read on node02.
    ms[0].ssh_ok("core", "etcdctl put /seed/first written-on-node00");
    assert_eq!(ms[2].ssh_ok("core", "etcdctl get --print-value-only /seed/first"), "written-on-node00");

    // node01 powered off: reported unhealthy, the other two go on.
    power_off(&mut ms[1]);
    let (ok, out, err) = ms[0].ssh("core", "etcdctl endpoint health --cluster 2>&1");
    assert!(!ok, "the cluster reports healthy with node01 powered off:\n{out}{err}");
    assert!(out.contains(&format!("http://{}:2379 is unhealthy", ips[1])), "node01 not reported unhealthy:\n{out}{err}");
    for ip in [&ips[0], &ips[2]] {
        assert!(out.contains(&format!("http://{ip}:2379 is healthy")), "{ip} with node01 down:\n{out}");
    }
    ms[2].ssh_ok("core", "etcdctl put /seed/while-down written-on-node02");
    assert_eq!(ms[0].ssh_ok("core", "etcdctl get --print-value-only /seed/while-down"), "written-on-node02");

    // node00 and node02 powered off too, then all three started again at
    // once: node01 rejoins and has the key written while it was down, and
    // the data of every node survived its reboot (it is on the Btrfs root).
    power_off(&mut ms[0]);
    power_off(&mut ms[2]);
    let rebooted = Instant::now();
    let mut ms: Vec<Machine> = members.iter().map(|m| Machine::start_again(&m.dir, &m.spec(b), &key, 2)).collect();
    wait_all_running(&mut ms);
    let got = ms[1]
        .ssh_retry("core", "etcdctl get --print-value-only /seed/while-down | grep -x written-on-node02", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", ms[1].ssh("core", "journalctl -u etcd --no-pager | tail -30").1));
    assert_eq!(got, "written-on-node02");
    let health = ms[2].ssh_retry("core", "etcdctl endpoint health --cluster 2>&1", Duration::from_secs(300)).unwrap();
    assert_all_healthy(&health, &ips);
    eprintln!(
        "coreos_node: node01 rejoined and the cluster is healthy {:.0} s after all three were started again",
        rebooted.elapsed().as_secs_f64()
    );
    for m in &ms {
        let v = m.ssh_ok("core", "etcdctl get --print-value-only /seed/first; etcdctl get --print-value-only /seed/while-down");
        assert_eq!(v, "written-on-node00\nwritten-on-node02", "{}: the keys after a reboot", m.name);
    }
    drop(ms);
    drop(switch);
}

/// The seed's discovery token (its URL's last part).
const DISCOVERY_TOKEN: &str = "ec42cfef0450bd8a99090ee3d3294493";

/// An etcd on the host's loopback that serves the v2 discovery protocol, as
/// discovery.etcd.io does (it is an etcd v2 keyspace): the binary of the
/// locked `etcd-server` package, from the package cache. The machines reach
/// it through their user-network port (qemu forwards 10.0.2.2 to the host's
/// loopback); nothing listens beyond 127.0.0.1.
struct DiscoveryEtcd {
    child: std::process::Child,
    port: u16,
}

impl DiscoveryEtcd {
    fn start(dir: &Path) -> DiscoveryEtcd {
        let lock: serde_json::Value = serde_json::from_slice(&fs::read(lock_path()).unwrap()).unwrap();
        let p = lock["packages"].as_array().unwrap().iter().find(|p| p["name"] == "etcd-server").expect("etcd-server in the lock");
        let deb = cache().join("debs").join(Path::new(p["filename"].as_str().unwrap()).file_name().unwrap());
        let x = dir.join("etcd-server");
        let (ok, out) = tool("dpkg-deb", &["-x", deb.to_str().unwrap(), x.to_str().unwrap()]);
        assert!(ok, "dpkg-deb -x {}: {out} (./build.sh fetch)", deb.display());
        let (port, peer) = (common::guest::free_port(), common::guest::free_port());
        let log = fs::File::create(dir.join("discovery-etcd.log")).unwrap();
        let child = Command::new(x.join("usr/bin/etcd"))
            .args(["--name", "discovery", "--enable-v2=true"])
            .arg("--data-dir")
            .arg(dir.join("discovery.etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=discovery=http://127.0.0.1:{peer}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = DiscoveryEtcd { child, port };
        let t = Instant::now();
        while !d.curl(&["/health"]).0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the discovery etcd did not answer:\n{}",
                fs::read_to_string(dir.join("discovery-etcd.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    /// `curl -fsS http://127.0.0.1:PORT<path> ARGS...`: (success, output).
    fn curl(&self, args: &[&str]) -> (bool, String) {
        let url = format!("http://127.0.0.1:{}{}", self.port, args[0]);
        let mut a = vec!["-fsS", "--max-time", "10", url.as_str()];
        a.extend(&args[1..]);
        tool("curl", &a)
    }
}

impl Drop for DiscoveryEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ Docker Swarm

/// The seed's swarm addresses: manager0 at .100, the workers after it.
const SWARM: [(&str, &str); 3] = [("manager0", "192.168.0.100"), ("worker0", "192.168.0.101"), ("worker1", "192.168.0.102")];
/// Where the swarm's nginx image lives: Debian's `docker-registry` on manager0.
const REGISTRY: &str = "192.168.0.100:5000";

/// The cloud-config of a swarm node: Docker trusts the VPC's plain-HTTP
/// registry on manager0 (`/etc/docker/daemon.json`, written before
/// Docker starts); manager0 starts the registry, with Debian's
/// configuration less its `htpasswd` section (a registry for the private
/// network, no accounts); etcd is not part of the swarm and is masked.
fn swarm_cloud_config(manager: bool) -> String {
    let (config, unit) = if manager {
        (
            "  - path: /etc/docker/registry/config.yml\n\
             \x20   content: |\n\
             \x20     version: 0.1\n\
             \x20     storage:\n\
             \x20       filesystem:\n\
             \x20         rootdirectory: /var/lib/docker-registry\n\
             \x20       delete:\n\
             \x20         enabled: true\n\
             \x20     http:\n\
             \x20       addr: :5000\n\
             \x20       headers:\n\
             \x20         X-Content-Type-Options: [nosniff]\n",
            "    - name: docker-registry.service\n      command: start\n",
        )
    } else {
        ("", "")
    };
    format!(
        "#cloud-config\n\
         write_files:\n\
         \x20 - path: /etc/docker/daemon.json\n\
         \x20   permissions: '0644'\n\
         \x20   content: |\n\
         \x20     {{ \"insecure-registries\": [\"{REGISTRY}\"] }}\n\
         {config}\
         coreos:\n\
         \x20 units:\n\
         {unit}\
         \x20   - name: etcd.service\n\
         \x20     mask: true\n"
    )
}

/// The swarm's three machines: name, address, cloud-config, a NIC on
/// `switch`, and port 80 of each forwarded from the host's loopback (the
/// returned ports), as a VPC's floating addresses would reach them.
fn swarm_members(dir: &Path, key: &SshKey, switch: &common::guest::Switch) -> (Vec<Member>, Vec<u16>) {
    SWARM
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| {
            let dir = dir.join(name);
            fs::create_dir_all(&dir).unwrap();
            let (mac, private_mac) = (format!("52:54:00:c1:01:1{i}"), format!("52:54:00:c2:01:1{i}"));
            let drive = config_drive(
                &dir,
                &[
                    ("meta_data.json", &meta_data(name, key)),
                    ("network_data.json", &two_port_network_data(&mac, &private_mac, ip)),
                    ("user_data", &swarm_cloud_config(i == 0)),
                ],
            );
            let http = common::guest::free_port();
            let member = Member {
                name: name.to_string(),
                dir,
                drive,
                ip: ip.to_string(),
                mac,
                user_net: format!("hostfwd=tcp:127.0.0.1:{http}-10.0.2.15:80"),
                extra: switch.nic("vpc", &private_mac),
            };
            (member, http)
        })
        .unzip()
}

/// `GET /` on the host's loopback `port` (a node's forwarded port 80):
/// the page, or why not.
fn http_get(port: u16) -> Result<String, String> {
    let url = format!("http://127.0.0.1:{port}/");
    let (ok, out) = tool("curl", &["-fsS", "--max-time", "10", &url]);
    if ok {
        Ok(out)
    } else {
        Err(out)
    }
}

/// Retry [`http_get`] until the page is nginx's, within `within`.
fn wait_page(name: &str, port: u16, within: Duration) -> String {
    let t = Instant::now();
    loop {
        match http_get(port) {
            Ok(page) if page.contains("Welcome to nginx!") => return page,
            r if t.elapsed() > within => panic!("{name}: port 80 gave no nginx page within {within:?}: {r:?}"),
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// The nodes running a task of `webserver` (desired and current state
/// running), sorted.
fn webserver_nodes(manager: &Machine) -> Vec<String> {
    let ps = manager.ssh_ok("core", "docker service ps webserver --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'");
    let mut nodes: Vec<String> =
        ps.lines().filter(|l| l.contains(" Running ")).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    nodes.sort();
    nodes
}

/// Poll [`webserver_nodes`] until `done` holds; the nodes then.
fn wait_tasks(manager: &Machine, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let t = Instant::now();
    loop {
        let nodes = webserver_nodes(manager);
        if done(&nodes) {
            return nodes;
        }
        if t.elapsed() > Duration::from_secs(600) {
            panic!("webserver: {what} did not happen within 600 s:\n{}", manager.ssh("core", "docker service ps webserver --no-trunc").1);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// `docker node ls` as `HOSTNAME STATUS AVAILABILITY` lines, sorted.
fn swarm_nodes(manager: &Machine) -> Vec<String> {
    let ls = manager.ssh_ok("core", "docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'");
    let mut v: Vec<String> = ls.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The seed's Docker Swarm: manager0, worker0 and worker1 from the one
/// image, started at once on the private network, driven over SSH as
/// `core` with the seed's commands. The nginx image is built from the
/// locked Debian packages by `recipes/nginx-oci.json` (the `oci` output),
/// copied to manager0 and pushed to the VPC's own registry there (Debian's
/// `docker-registry`, started by manager0's cloud-config); the workers
/// pull it from there. Checked: three nodes Ready with manager0 drained;
/// `webserver` runs on a worker and port 80 of every node answers (the
/// routing mesh); the worker running it is powered off and the task moves
/// to the other worker; that worker started again, `--replicas 2` puts one
/// task on each worker.
#[test]
fn the_seeds_docker_swarm_serves_nginx_on_every_node_and_survives_a_worker() {
    if skipped_without_root() {
        return;
    }
    let b = built();
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("nginx");
    let recipe: serde_json::Value = serde_json::from_slice(&fs::read(root().join("recipes/nginx-oci.json")).unwrap()).unwrap();
    build_in_project(&recipe, &oci);
    let tar = oci.join("nginx-oci.oci.tar");
    let key = SshKey::new(t.path());
    let switch = common::guest::Switch::start(t.path());
    let (members, http) = swarm_members(t.path(), &key, &switch);
    let cold = Instant::now();
    let mut ms: Vec<Machine> = members.iter().map(|m| Machine::start(&m.dir, &m.spec(b), &key)).collect();
    wait_all_running(&mut ms);
    let running = cold.elapsed();

    // The seed's commands: init on manager0, join with the token read over
    // SSH, drain manager0.
    let init = ms[0].ssh_ok("core", &format!("docker swarm init --advertise-addr {}", SWARM[0].1));
    assert!(init.contains("is now a manager"), "docker swarm init: {init}");
    let token = ms[0].ssh_ok("core", "docker swarm join-token -q worker");
    for m in &ms[1..] {
        let out = m.ssh_ok("core", &format!("docker swarm join --token {token} {}:2377", SWARM[0].1));
        assert!(out.contains("This node joined a swarm as a worker"), "{}: {out}", m.name);
    }
    ms[0].ssh_ok("core", "docker node update --availability drain manager0");
    // A node that just joined may show `Unknown` for a moment under TCG.
    let want = ["manager0 Ready Drain", "worker0 Ready Active", "worker1 Ready Active"];
    let t0 = Instant::now();
    while swarm_nodes(&ms[0]) != want && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(swarm_nodes(&ms[0]), want);

    // The image into the VPC's registry, from manager0.
    ms[0].copy_to("core", &tar, "/tmp/nginx.oci.tar");
    let loaded = ms[0].ssh_ok("core", "docker load -i /tmp/nginx.oci.tar && rm /tmp/nginx.oci.tar");
    assert!(loaded.contains("Loaded image: nginx:1.22"), "docker load: {loaded}");
    let image = format!("{REGISTRY}/nginx:1.22");
    ms[0].ssh_ok("core", &format!("docker tag nginx:1.22 {image}"));
    ms[0].ssh_retry("core", &format!("docker push {image}"), Duration::from_secs(120)).unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            ms[0].ssh("core", "systemctl status docker-registry --no-pager; journalctl -u docker-registry --no-pager | tail").1
        )
    });

    // webserver runs on a worker and every node's port 80 answers.
    ms[0].ssh_ok("core", &format!("docker service create --detach --name webserver --replicas 1 --publish 80:80 {image}"));
    let first = wait_tasks(&ms[0], "one task running", |n| n.len() == 1);
    assert!(first[0].starts_with("worker"), "the drained manager0 runs the task: {first:?}");
    for (m, port) in ms.iter().zip(&http) {
        wait_page(&m.name, *port, Duration::from_secs(180));
    }
    let page_after = cold.elapsed();
    // And from inside the VPC: manager0's private address, from a worker.
    let inside = ms[1].ssh_ok(
        "core",
        &format!("timeout 20 bash -c 'exec 3<>/dev/tcp/{}/80; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'", SWARM[0].1),
    );
    assert!(inside.starts_with("HTTP/1.1 200 OK") && inside.contains("Welcome to nginx!"), "worker0 → manager0:80: {inside}");
    eprintln!(
        "coreos_node: swarm: all 3 running {:.0} s and the page answering on every node {:.0} s after a cold start (task on {})",
        running.as_secs_f64(),
        page_after.as_secs_f64(),
        first[0]
    );

    // The worker running it is powered off (hard, as from the VPC's panel):
    // the task moves to the other worker and the page answers again.
    let (gone, other) = if first[0] == "worker0" { (1, 2) } else { (2, 1) };
    let lost = Instant::now();
    drop(ms.remove(gone));
    let other_i = if other > gone { other - 1 } else { other };
    let moved = wait_tasks(&ms[0], "the task moving", |n| n == [SWARM[other].0]);
    assert_eq!(moved, [SWARM[other].0]);
    wait_page(&ms[0].name, http[0], Duration::from_secs(180));
    wait_page(&ms[other_i].name, http[other], Duration::from_secs(180));
    eprintln!(
        "coreos_node: swarm: {} lost, the page answered from {} {:.0} s later",
        SWARM[gone].0,
        SWARM[other].0,
        lost.elapsed().as_secs_f64()
    );
    let down = swarm_nodes(&ms[0]);
    assert!(down.contains(&format!("{} Down Active", SWARM[gone].0)), "{down:?}");

    // The worker started again, then `--replicas 2`: one task on each worker.
    let mut back = Machine::start_again(&members[gone].dir, &members[gone].spec(b), &key, 2);
    wait_running(&mut back);
    let t2 = Instant::now();
    while !swarm_nodes(&ms[0]).contains(&format!("{} Ready Active", SWARM[gone].0)) {
        assert!(t2.elapsed() < Duration::from_secs(300), "{} not Ready again: {:?}", SWARM[gone].0, swarm_nodes(&ms[0]));
        std::thread::sleep(Duration::from_secs(3));
    }
    ms[0].ssh_ok("core", "docker service update --detach --replicas 2 webserver");
    let both = wait_tasks(&ms[0], "two tasks, one per worker", |n| n.len() == 2);
    assert_eq!(both, ["worker0", "worker1"], "--replicas 2");
    wait_page(&back.name, http[gone], Duration::from_secs(180));
    drop(back);
    drop(ms);
    drop(switch);
}
