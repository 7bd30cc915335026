//! `recipe.json`: the typed schema, loading with `extends` layering, and
//! validation. Every error names the JSON path of the field at fault.
//!
//! Loading goes: read text → parse to a JSON value (syntax errors carry line
//! and column) → merge the `extends` chain (objects merge, later wins, arrays
//! replace) → deserialize into [`Recipe`] tracking the path of any type error
//! or unknown field → semantic checks ([`validate`]).

pub mod image_ref;
pub mod layer;
pub mod size;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use image_ref::ImageRef;
pub use layer::Layer;
pub use size::Size;

/// Errors from loading a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("reading recipe {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON at line {line}, column {column}: {msg}")]
    Syntax { path: PathBuf, line: usize, column: usize, msg: String },
    #[error("{path}: field `{field}`: {msg}")]
    Field { path: PathBuf, field: String, msg: String },
    #[error("{path}: `extends` chain includes itself via {again}")]
    ExtendsLoop { path: PathBuf, again: PathBuf },
}

/// The whole recipe, after `extends` is merged.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Names the outputs: `out/NAME.raw`, `out/NAME.manifest.json`, …
    /// Must match `[a-z0-9][a-z0-9._-]*`.
    pub name: String,
    /// Every timestamp in the image is clamped to this (seconds since 1970).
    /// `SOURCE_DATE_EPOCH` in the environment overrides it. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// Recipes this one builds on, relative to this file; merged in order,
    /// then this file on top (objects merge, later wins, arrays replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extends: Vec<String>,
    /// Named in-memory trees, each built from its layers in order.
    #[serde(default)]
    pub trees: BTreeMap<String, Vec<Layer>>,
    /// The initramfs: which tree to pack, and how to compress it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<Initramfs>,
    /// The disk: its size and GPT partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
    /// The kernel: a locked Debian package (or a bare image), its command
    /// line, and the modules to put into the initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// The appliance's command. With a root partition: the root's init
    /// (default `/sbin/init`). Without: what the agent runs from the
    /// initramfs (default `/bin/sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Vec<String>>,
    /// OEM configuration (CoreOS style): the platform whose OEM layer to use,
    /// and the recipe's own layer on top of it. Rendered into the partition
    /// labelled `OEM`, or into the initramfs when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oem: Option<Oem>,
    /// How the image boots: `{"firmware": ["uefi", "bios"]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
    /// What `build-image boot` waits for on the serial console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke: Option<Smoke>,
    /// What to write into the output folder: `raw`, `initramfs`, `qcow2`,
    /// `vmdk`, `vhd`, `uki`, `kernel+initramfs`, `cloud-config`, `ignition`,
    /// `oci`.
    #[serde(default = "default_outputs")]
    pub outputs: Vec<Output>,
    /// Options of the `qcow2` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qcow2: Option<Qcow2Options>,
    /// Options of the `vmdk` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmdk: Option<VmdkOptions>,
    /// The `oci` output: which tree becomes the container image, its tag
    /// and its run configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciImage>,
}

/// `"oci": {"tree": "root", "tag": "nginx:1.22", "entrypoint": [...], ...}`:
/// the container image the `oci` output writes (`NAME.oci.tar`, an OCI
/// image layout and a `docker save` archive in one). Only `tree` is
/// required; the run configuration has only the keys given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciImage {
    /// The tree (in `trees`) that becomes the image's one layer.
    pub tree: String,
    /// `[REGISTRY/]REPOSITORY[:TAG]`, as `docker tag` takes it (no
    /// `@digest`); `:latest` when no tag is given. Default `NAME:latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The config's `Entrypoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The config's `Cmd` (the arguments after the entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// The config's `Env`: `KEY=VALUE` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The config's `WorkingDir`: an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The config's `User`: `NAME`, `UID`, `UID:GID`, `NAME:GROUP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The config's `ExposedPorts`: `PORT` or `PORT/tcp`, `PORT/udp`,
    /// `PORT/sctp` (`80` is `80/tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<Vec<String>>,
    /// The config's `Labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl OciImage {
    /// The tag as written, or `NAME:latest` from the recipe's name.
    pub fn tag_or_default(&self, recipe_name: &str) -> String {
        self.tag.clone().unwrap_or_else(|| format!("{recipe_name}:latest"))
    }
}

/// `"qcow2": {"compress": true}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Options {
    /// Store clusters deflate-compressed (as `qemu-img convert -c` does):
    /// smaller to ship, slower to write. Default false.
    #[serde(default)]
    pub compress: bool,
    /// Compression level 1–9 (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
}

/// `"vmdk": {"adapter": "lsilogic"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmdkOptions {
    /// The disk controller the descriptor names: `lsilogic` (default, what
    /// ESXi and OVF importers expect) or `ide`.
    #[serde(default)]
    pub adapter: VmdkAdapter,
}

/// The VMDK descriptor's `ddb.adapterType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmdkAdapter {
    #[default]
    Lsilogic,
    Ide,
}

/// `"kernel": {"package": "linux-image-cloud-amd64", "cmdline": "...", "modules": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// A package name from kernel/packages.lock, or a path ending in `.deb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// A bare kernel image on the host (no modules available then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kernel command line. `root=PARTUUID=…` and `rootfstype=` are added
    /// for a root partition. Default `console=ttyS0,115200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Modules to load at boot; their dependencies come along. The builder
    /// adds what the boot path needs (the root's filesystem, the virtio PCI
    /// transport of virtio drivers, the config drive's filesystems): see
    /// `drivers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// `needed` (default): `modules` plus what the boot path needs.
    /// `generic`: also the disk, CD-ROM and network drivers of the common
    /// hypervisors (QEMU/KVM, Hyper-V, VMware, Xen), as dracut's
    /// non-hostonly mode, for an image that boots on any of them.
    #[serde(default, skip_serializing_if = "Drivers::is_needed")]
    pub drivers: Drivers,
}

/// `"kernel": {"drivers": "generic"}`: which drivers the initramfs gets
/// beyond `kernel.modules`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Drivers {
    /// The modules the recipe lists, plus what the boot path needs: the
    /// root's (and the OEM and growing partitions') filesystem, `virtio_pci`
    /// for a virtio driver, and the config drive's filesystems when the OEM
    /// platform reads one.
    #[default]
    Needed,
    /// `needed`, plus the virtual hardware of common hypervisors: virtio
    /// (PCI, block, SCSI, net), NVMe, AHCI, IDE (`ata_piix`), SCSI disks and
    /// CD-ROMs, Hyper-V (storvsc, netvsc), VMware (pvscsi, mptspi, vmxnet3,
    /// e1000, e1000e), Xen (blkfront, netfront). Names the kernel has built
    /// in or lacks are skipped, and the build says so.
    Generic,
}

impl Drivers {
    pub fn is_needed(&self) -> bool {
        *self == Drivers::Needed
    }
}

/// `"oem": {"platform": "vpc", "user": "core", "hostname": "node01", "network": {...}, "ssh_authorized_keys": [...]}`.
///
/// The recipe's OEM layer: merged over the built-in defaults and the
/// platform's layer (objects merge, later wins, arrays replace).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Oem {
    /// Whose OEM layer (`oem/platforms/NAME/oem.json`) to use: `vpc`
    /// (OpenStack: config drive, then the metadata service), `qemu` or
    /// `metal` (DHCP on every link). Default `vpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The login user that gets the SSH keys (default `core`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The host name (default: from the cloud metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Network configuration in OpenStack's `network_data.json` shape:
    /// `{"links": [...], "networks": [...], "services": [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkData>,
    /// SSH public keys for `user`, one per entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_authorized_keys: Option<Vec<String>>,
    /// Root mode: keep renewing the DHCP leases the agent took after it
    /// switches to the root (a small `agent-dhcp` process stays). For roots
    /// without a DHCP client of their own; default false: the root's client
    /// (systemd-networkd, dhclient, udhcpc) takes the leases over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_leases: Option<bool>,
}

/// A platform with an OEM layer in `oem/platforms/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// OpenStack VPC: config drive, then the metadata service; user `core`.
    Vpc,
    /// QEMU: DHCP on every link.
    Qemu,
    /// Bare metal: DHCP on every link.
    Metal,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Platform::Vpc => "vpc",
            Platform::Qemu => "qemu",
            Platform::Metal => "metal",
        }
    }
}

/// OpenStack `network_data.json`: links, networks and services. Entries
/// are kept as given (extra keys allowed), so that the cloud's own
/// documents fit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkData {
    /// Interfaces: `{"id": "eth0", "type": "phy", "ethernet_mac_address": "fa:16:3e:…", "mtu": 1500}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Addresses on links: `{"id": "n0", "link": "eth0", "type": "ipv4", "ip_address": "10.0.0.5",
    /// "netmask": "255.255.255.0", "routes": [...]}`, or `"type": "ipv4_dhcp"`.
    /// `"link": "*"` means every link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// `{"type": "dns", "address": "8.8.8.8"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

/// Firmware the image boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Uefi,
    Bios,
}

/// `"boot": {"firmware": ["uefi", "bios"]}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Default `["uefi"]`.
    #[serde(default = "default_firmware")]
    pub firmware: Vec<Firmware>,
}

fn default_firmware() -> Vec<Firmware> {
    vec![Firmware::Uefi]
}

/// `"smoke": {"expect": "READY"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Smoke {
    /// Text on the serial console that means the appliance is up.
    pub expect: String,
}

fn default_outputs() -> Vec<Output> {
    vec![Output::Raw]
}

/// An artifact kind written to the output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// `NAME.raw`: the sparse raw disk image.
    Raw,
    /// `NAME.initramfs`: the compressed cpio archive.
    Initramfs,
    /// `NAME.qcow2`: qcow2 v3 (QEMU, OpenStack), holes and zero clusters skipped.
    Qcow2,
    /// `NAME.vhd`: fixed VHD (Hyper-V, Azure).
    Vhd,
    /// `NAME.efi`: the unified kernel image.
    Uki,
    /// `NAME.vmlinuz` and `NAME.initramfs`, for direct kernel boot.
    #[serde(rename = "kernel+initramfs")]
    KernelInitramfs,
    /// `NAME.cloud-config.yml`: `#cloud-config` YAML (CoreOS/RancherOS
    /// cloudinit): hostname, the OEM user's SSH keys, inline files, networkd
    /// units for the OEM network.
    #[serde(rename = "cloud-config")]
    CloudConfig,
    /// `NAME.ign`: Ignition config (spec 3.0.0) JSON with the same content.
    Ignition,
    /// `NAME.vmdk`: streamOptimized VMDK (VMware ESXi, OVA), compressed.
    Vmdk,
    /// `NAME.oci.tar`: a container image of the `oci` section's tree, one
    /// tar that is both an OCI image layout (`skopeo copy oci-archive:`)
    /// and a `docker save` archive (`docker load`).
    Oci,
}

/// `"initramfs": {"tree": "NAME", "compression": "gzip"}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    /// Name of the tree (in `trees`) to pack.
    pub tree: String,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Compression level: gzip 1–9 (default 6), zstd 1–19 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
}

/// Initramfs compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// `"disk": {"size": "2GiB", "partitions": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Total size. Optional when every partition has a fixed size: the disk
    /// is then the partitions plus GPT overhead, aligned to 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// GPT partitions, in order.
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

/// One GPT partition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT partition name (and the filesystem label unless `fs.label` says
    /// otherwise). At most 36 UTF-16 code units.
    pub label: String,
    /// `esp`, `bios-boot`, `linux`, `root-x86-64`, `usr-x86-64`, `swap`, or a
    /// literal type GUID.
    #[serde(rename = "type")]
    pub type_: String,
    /// Bytes, `"64MiB"`, `"1GB"`, or `"fill"` for the rest of the disk.
    pub size: Size,
    /// `vfat` or `none`.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// The tree (in `trees`) to write into the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    /// Filesystem options.
    #[serde(default)]
    pub fs: FsOptions,
    /// Grow this partition and its filesystem (ext4, btrfs) to the end of
    /// the disk at boot when the disk is larger than the image (the guest
    /// agent does it; see docs/agent.md). Only the last partition may grow.
    #[serde(default, skip_serializing_if = "is_false")]
    pub grow: bool,
}

impl Partition {
    /// Whether this is the OEM partition: its filesystem label (`fs.label`,
    /// else the partition label) is [`oem_rules::OEM_LABEL`].
    pub fn is_oem(&self) -> bool {
        self.fs.label.as_deref().unwrap_or(&self.label) == oem_rules::OEM_LABEL
    }
}

/// Map a recipe partition `type` to its GPT type GUID: a Discoverable
/// Partitions Specification name, or a literal GUID.
pub fn partition_type_guid(t: &str) -> Option<uuid::Uuid> {
    let g = match t {
        "esp" => "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "bios-boot" => "21686148-6449-6e6f-744e-656564454649",
        "linux" => "0fc63daf-8483-4772-8e79-3d69d8477de4",
        "root-x86-64" => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "usr-x86-64" => "8484680c-9521-48c6-9c11-b0720656f69e",
        "swap" => "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
        "home" => "933ac7e1-2eb4-4f13-b844-0e14e2aef915",
        "srv" => "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
        "var" => "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "tmp" => "7ec6f557-3bc5-4aca-b293-16ef5df639d1",
        "xbootldr" => "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        other => other,
    };
    uuid::Uuid::parse_str(g).ok()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The filesystem written into a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// Nothing: the partition is left empty (zeroed at its start).
    #[default]
    None,
    /// FAT (FAT32 when the partition is large enough), as ESPs use.
    Vfat,
    /// ext4, written directly (no mke2fs).
    Ext4,
    /// Btrfs, written directly (no mkfs.btrfs).
    Btrfs,
}

/// Options shared by the filesystem writers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsOptions {
    /// Filesystem label; defaults to the partition label (FAT: upper-cased,
    /// at most 11 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// ext4: bytes per inode (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode_ratio: Option<u64>,
    /// ext4: exact inode count (overrides `inode_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// ext4: percent of blocks reserved for root (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_percent: Option<u32>,
    /// ext4: write an (empty, clean) journal. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<bool>,
    /// ext4: feature changes against the defaults, e.g. ["-huge_file", "+quota"].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// `"size": "auto"`: free space to add on top of the content, as a
    /// percentage ("20%") or a size ("64MiB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<String>,
    /// btrfs: subvolumes, e.g. [{"name": "@", "from": "/"}].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subvolumes: Vec<Subvolume>,
    /// btrfs: the subvolume a plain mount shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_subvolume: Option<String>,
    /// btrfs: `zstd` or `zlib` compression of data extents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// A btrfs subvolume made from a part of the tree.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subvolume {
    /// Name in the top level, e.g. `@home`.
    pub name: String,
    /// The tree directory it holds, e.g. `/home`.
    pub from: String,
}

impl FsOptions {
    /// What the filesystem writers take from these options (all but the
    /// label and the headroom, which the plan uses).
    pub fn writer_options(&self) -> imagefs::fs::FsOptions {
        imagefs::fs::FsOptions {
            inode_ratio: self.inode_ratio,
            inodes: self.inodes,
            reserved_percent: self.reserved_percent,
            journal: self.journal,
            features: self.features.clone(),
            subvolumes: self
                .subvolumes
                .iter()
                .map(|s| imagefs::fs::btrfs::SubvolumeSpec { name: s.name.clone(), from: s.from.clone() })
                .collect(),
            default_subvolume: self.default_subvolume.clone(),
            compression: self.compression.clone(),
        }
    }
}

impl Recipe {
    /// The effective `source_date_epoch`.
    pub fn epoch(&self) -> i64 {
        self.source_date_epoch.unwrap_or(0)
    }

    /// The firmware the image boots with (`["uefi"]` unless `boot` says).
    pub fn firmware(&self) -> Vec<Firmware> {
        self.boot.as_ref().map(|b| b.firmware.clone()).unwrap_or_else(default_firmware)
    }
}

/// A loaded recipe, with what the later stages need to know about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub recipe: Recipe,
    /// Folder that relative host paths resolve against.
    pub base_dir: PathBuf,
    /// sha256 of the canonical merged recipe (sorted keys, with the effective
    /// `source_date_epoch`). All identities derive from it.
    pub digest: [u8; 32],
    /// The canonical merged JSON that was digested.
    pub canonical: String,
}

/// Load, merge and validate a recipe. `env_epoch` is `SOURCE_DATE_EPOCH` from
/// the environment, if set.
pub fn load(path: &Path, env_epoch: Option<i64>) -> Result<Loaded, RecipeError> {
    let mut stack = Vec::new();
    let mut value = load_merged(path, &mut stack)?;
    if let Some(e) = env_epoch {
        value["source_date_epoch"] = serde_json::Value::from(e);
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("extends");
    }
    let recipe: Recipe = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        RecipeError::Field { path: path.to_path_buf(), field, msg: e.into_inner().to_string() }
    })?;
    validate::validate(&recipe).map_err(|(field, msg)| RecipeError::Field { path: path.to_path_buf(), field, msg })?;
    let mut canonical_value = serde_json::to_value(&recipe).expect("recipe serializes");
    canonical_value["source_date_epoch"] = serde_json::Value::from(recipe.epoch());
    let canonical = serde_json::to_string(&canonical_value).expect("value serializes");
    let digest: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    Ok(Loaded { recipe, base_dir, digest, canonical })
}

/// Parse one file and merge the files it extends beneath it. Relative host
/// paths inside an extended file keep resolving against the top recipe's
/// folder; `extends` paths resolve against the file that names them.
fn load_merged(path: &Path, stack: &mut Vec<PathBuf>) -> Result<serde_json::Value, RecipeError> {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canon) {
        return Err(RecipeError::ExtendsLoop { path: stack[0].clone(), again: path.to_path_buf() });
    }
    let text = read_recipe(path).map_err(|source| RecipeError::Read { path: path.to_path_buf(), source })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| RecipeError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        msg: strip_position(&e.to_string()),
    })?;
    if !value.is_object() {
        return Err(RecipeError::Field { path: path.to_path_buf(), field: ".".into(), msg: "a recipe must be a JSON object".into() });
    }
    let extends = match value.get("extends") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => {
            let mut v = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => v.push(s.to_string()),
                    None => {
                        return Err(RecipeError::Field {
                            path: path.to_path_buf(),
                            field: format!("extends[{i}]"),
                            msg: "expected a path string to another recipe".into(),
                        })
                    }
                }
            }
            v
        }
        Some(_) => {
            return Err(RecipeError::Field {
                path: path.to_path_buf(),
                field: "extends".into(),
                msg: "expected an array of recipe paths, e.g. [\"base.json\"]".into(),
            })
        }
    };
    stack.push(canon);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut merged = serde_json::Value::Object(Default::default());
    for e in &extends {
        let base = load_merged(&dir.join(e), stack)?;
        merge(&mut merged, base);
    }
    stack.pop();
    merge(&mut merged, value);
    Ok(merged)
}

/// Largest recipe file read (the examples are a few KiB).
pub const MAX_RECIPE_BYTES: u64 = 16 << 20;

/// A recipe file's text: a regular file (after symlinks) of at most
/// [`MAX_RECIPE_BYTES`]. `extends` may name any path, `/dev/zero` too,
/// which would otherwise be read until memory runs out.
fn read_recipe(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file: a recipe is a JSON file"));
    }
    let mut text = String::new();
    f.take(MAX_RECIPE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_RECIPE_BYTES {
        return Err(Error::new(ErrorKind::InvalidData, format!("larger than {} MiB: not a recipe", MAX_RECIPE_BYTES >> 20)));
    }
    Ok(text)
}

/// `extends` merges as the OEM layers do: objects key by key (later
/// wins), anything else replaces. One rule, in the crate the builder shares
/// with the agent.
pub use oem_rules::merge;

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The JSON Schema of [`Recipe`], as written to `recipes/schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Recipe);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_types_by_name_or_guid() {
        assert_eq!(partition_type_guid("esp"), partition_type_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
        assert!(partition_type_guid("espx").is_none());
    }

    #[test]
    fn merge_objects_and_replace_arrays() {
        let mut a = serde_json::json!({"a": {"x": 1, "y": [1, 2]}, "b": 1});
        merge(&mut a, serde_json::json!({"a": {"y": [3], "z": 2}}));
        assert_eq!(a, serde_json::json!({"a": {"x": 1, "y": [3], "z": 2}, "b": 1}));
    }
}

#[cfg(test)]
mod schema_tests {
    /// `recipes/schema.json` is generated from these types; regenerate it with
    /// `./build.sh schema` when they change.
    #[test]
    fn committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/schema.json");
        let committed = std::fs::read_to_string(&path).expect("recipes/schema.json exists");
        assert!(committed == super::schema_json(), "recipes/schema.json is stale: run ./build.sh schema");
    }

    /// Every example recipe loads and validates.
    #[test]
    fn example_recipes_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") && p.file_name().is_some_and(|f| f != "schema.json") {
                super::load(&p, None).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n > 0);
    }
}

#[cfg(test)]
mod extends_tests {
    use super::*;

    /// Found by `fuzz/` (target `recipe`): `"extends": ["/dev/zero"]` read
    /// until memory ran out. Only regular files of a sane size are read;
    /// the error names the file.
    #[test]
    fn extends_reads_only_regular_files_of_a_sane_size() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_RECIPE_BYTES + 1).unwrap();
        let fifo = d.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (target, why) in [("/dev/zero", "not a regular file"), ("fifo.json", "not a regular file"), ("big.json", "larger than 16 MiB")]
        {
            let r = d.path().join("r.json");
            std::fs::write(&r, format!(r#"{{"name": "x", "extends": ["{target}"]}}"#)).unwrap();
            let e = load(&r, None).unwrap_err();
            let chain = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(chain.contains(why) && chain.contains(target.trim_start_matches('/')), "{target}: {chain}");
        }
    }
}
