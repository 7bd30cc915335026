//! # guest-agent: PID 1 of the initramfs in build-image appliances
//!
//! The kernel unpacks the initramfs that build-image wrote and runs this
//! static binary as `/init`. It does the few things a generic initramfs
//! (dracut, initramfs-tools) does, without a shell, udev or `modules.dep`:
//!
//! 1. **Mounts** `/proc`, `/sys`, `/dev` (devtmpfs) and `/run` (tmpfs); a
//!    mount point that is already a mount is left alone. If the kernel could
//!    not give PID 1 a console (fds 0–2), `/dev/console` is opened.
//! 2. Sets the **hostname** from `/etc/hostname` and `PATH` for children.
//! 3. **Loads modules** listed in `/etc/agent/modules` with `finit_module`,
//!    top to bottom. The builder writes that list already in dependency order
//!    (from each `.ko`'s `.modinfo depends=`), so the agent needs no
//!    dependency resolution at boot. `EEXIST` (already loaded) is fine; any
//!    other failure is logged and the boot goes on, since a later step (the
//!    root device not appearing) reports the consequence.
//! 4. Reads the **kernel command line** ([`cmdline`]).
//!    * With `root=` (`PARTUUID=`, `PARTLABEL=`, `UUID=`, `LABEL=`, `/dev/…`)
//!      it polls `/sys/class/block/*/uevent` until the device shows up
//!      (virtio probing is asynchronous; `agent.rootwait=` seconds, default
//!      10). `PARTUUID`/`PARTLABEL` come from the uevent where the kernel
//!      exports them, otherwise from the disk's own GPT ([`gpt`]); `UUID`,
//!      `LABEL` and the filesystem type come from the superblock
//!      ([`probe`]). A missing device node is created with `mknod`. The
//!      root is mounted on `/sysroot` (`rootfstype=`, `rootflags=`, `ro`/`rw`),
//!      the API mounts are moved under it, the initramfs contents are
//!      deleted (they would otherwise pin RAM), and the agent does the
//!      classic switch_root (`chdir`, `mount --move . /`, `chroot .`) and
//!      **execs** the root's init (`agent.init=`, `init=`, `/sbin/init`),
//!      which thereby becomes PID 1.
//!    * Without `root=` the appliance lives in the initramfs: the agent
//!      **stays PID 1**, spawns the command from `agent.init=` or
//!      `/etc/agent/init` (one argument per line) or `/bin/sh`, on the
//!      console as its controlling terminal, reaps every orphan
//!      (`waitpid(-1)`; PID 1 ignores signals it has no handler for, so a
//!      blocking wait loop is all SIGCHLD handling needs), and when that
//!      command exits, stops the rest, syncs and powers the machine off.
//!      busybox `halt`/`poweroff`/`reboot` (SIGUSR1/SIGUSR2/SIGTERM to PID 1)
//!      and Ctrl-Alt-Del (SIGINT: the agent turns CAD off) do the same with
//!      halt, power-off or reboot, also from the emergency shell.
//!    * With `agent.grow=<PARTUUID>` ([`grow`]), after the root is mounted
//!      (or before the appliance starts), the last partition is grown to the
//!      end of a disk larger than the image, and its filesystem online.
//! 5. Every step prints one `agent: …` line on the console, with the time
//!    since boot. A failure names what failed and the errno text, then the
//!    agent keeps the machine up for inspection: a `/bin/sh` on the console
//!    if there is one, otherwise it sleeps forever. PID 1 never exits (that
//!    would panic the kernel).
//!
//! 6. **OEM configuration** ([`oem`]): mounts the OEM partition (label `OEM`)
//!    read-only on `/usr/share/oem`, merges `config.d/*.json` (layer 30) and
//!    `oem.*` kernel parameters (layer 40) over the builder's layers 00–20,
//!    and writes the result to `/run/agent/oem.json`; in root mode the mount
//!    is moved into the new root before the switch.
//!
//! 7. **Configures the guest from the cloud** ([`cloud`], [`net`]): after the
//!    modules, before the appliance command runs or before the root switch
//!    (then hostname and SSH keys go under `/sysroot`): network from the
//!    OpenStack config drive, the metadata service, the recipe's static
//!    network or DHCP (on every NIC that asks for it at once, so NICs
//!    without a DHCP server cost one timeout together, not one each);
//!    hostname; SSH keys; `user_data`. In appliance mode
//!    the DHCP leases are then kept by a thread each ([`net::lease`]).
//!
//! 8. **Hands the network over** (root mode, [`net::networkd`]): when the
//!    root has systemd-networkd, what the agent configured is written as
//!    `/run/systemd/network/10-agent-<ifname>.network` files (static
//!    addresses, routes, DNS, MTU; DHCP links keep the agent's lease), and
//!    `/run` moves into the root with them.
//!
//! 9. **Provisions from user_data** (root mode, [`provisioning`]): Ignition
//!    on the first boot (an invalid config stops the boot), cloud-config on
//!    every boot, on `/sysroot`; the record in `/run/agent/provisioning.json`.
//!    [`datafs`] puts empty ext4/btrfs/vfat filesystems on data disks with
//!    the builder's own writers (`imagefs`), for Ignition's
//!    `storage.filesystems`; provisioning does not call it yet.
//!
//! The parsing is pure and unit-tested on the host ([`cmdline`], [`gpt`],
//! [`modules`], [`probe`], [`uevent`]); [`boot`] does the system calls
//! (through `rustix`, no libc wrappers needed except `kill(-1, …)`), and
//! `main.rs` only checks that it is PID 1 and calls [`boot::run`].

pub mod boot;
pub mod cloud;
pub mod cmdline;
pub mod datafs;
pub mod gpt;
pub mod grow;
pub mod modules;
pub mod net;
pub mod oem;
pub mod probe;
pub mod provisioning;
pub mod runspec;
pub mod uevent;

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// `agent.debug` on the cmdline: [`debug!`] lines are printed too.
pub static DEBUG: AtomicBool = AtomicBool::new(false);

/// Whether `agent.debug` is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Seconds since boot (CLOCK_MONOTONIC), as the kernel prints them.
pub fn uptime() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Print one `agent: [   1.234567] …` line on stderr (the console), in a
/// single write so lines from children do not interleave within it. Errors
/// are ignored: there is nowhere else to report them.
pub fn log(args: fmt::Arguments<'_>) {
    let line = format!("agent: [{:11.6}] {}\n", uptime(), args);
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// `log!` is `format!` into [`log`].
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log(format_args!($($t)*)) };
}

/// [`log!`] only with `agent.debug`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { if $crate::debug_enabled() { $crate::log(format_args!($($t)*)) } };
}
