//! # provision: user_data applied at first boot
//!
//! What a VPC user hands a machine as `user_data` (config drive or metadata
//! service) and what the guest agent does with it, in the order of
//! `docs/provisioning.md`:
//!
//! * [`userdata`]: which kind of user_data it is, told apart as Ignition and
//!   cloud-init tell it apart (Ignition JSON, `#cloud-config`, `#!` script,
//!   empty), and a name for anything else.
//! * [`ignition`]: Ignition configs, spec 2.x (translated to 3) and 3.0–3.4:
//!   parsed, checked with the JSON path of every error, and applied to a
//!   root directory (`/sysroot` in the initramfs, before switch_root).
//! * [`cloudconfig`]: CoreOS-dialect `#cloud-config` (plus cloud-init's
//!   `runcmd`/`bootcmd`), parsed and applied on every boot.
//! * [`passwd`]: users, groups and SSH keys written into a root's
//!   `/etc/{passwd,group,shadow,gshadow}` as `useradd --root` writes them,
//!   shared by both formats.
//!
//! The agent (a static PID 1) and the builder (`inspect --config-drive`)
//! both use it, so the crate stays small: no async, no network, no
//! processes.

pub mod cloudconfig;
pub mod ignition;
pub mod passwd;
pub mod userdata;
