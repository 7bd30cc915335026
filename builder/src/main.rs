//! The `build-image` command line: parses arguments and dispatches to the
//! library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};

/// `--version`: this program's version and the guest agent built into it.
static VERSION: LazyLock<String> = LazyLock::new(build_image::boot::agent::version);

/// Build reproducible, bootable appliance disk images from one recipe.json,
/// without root, loop devices or host mkfs tools.
///
/// `build-image RECIPE` is short for `build-image build RECIPE`.
#[derive(Debug, Parser)]
#[command(name = "build-image", version = VERSION.as_str(), propagate_version = true)]
struct Cli {
    /// Quiet: no progress on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The package lock to use (default: packages.lock next to the recipe or
    /// in a folder above it, or kernel/packages.lock there). Same as
    /// $BUILD_IMAGE_LOCK.
    #[arg(long, global = true, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// The folder of downloaded packages (default: $XDG_CACHE_HOME/build-image,
    /// shared by all projects). Same as $BUILD_IMAGE_CACHE.
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the outputs a recipe names (raw image, initramfs, …) and their manifest.
    Build {
        /// Path to recipe.json.
        recipe: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// A guest agent binary to use instead of the one built into
        /// build-image (default: $BUILD_IMAGE_AGENT if set). It must be
        /// statically linked.
        #[arg(long)]
        agent: Option<PathBuf>,
    },
    /// Start a project in DIR (new or empty): a recipe.json for a bootable
    /// hello appliance and a README with the next commands (fetch, build,
    /// boot).
    Init {
        /// The folder to create (or an empty one to fill).
        dir: PathBuf,
        /// The recipe's name, which names the outputs (default: DIR's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Read an image and show its partition table and filesystems.
    Inspect {
        /// Path to a raw disk image (optional with --config-drive).
        #[arg(required_unless_present = "config_drive")]
        image: Option<PathBuf>,
        /// An OpenStack config drive (vfat or ISO 9660 labelled config-2):
        /// its metadata, and the kind of its user_data with the agent's verdict.
        #[arg(long, value_name = "DRIVE")]
        config_drive: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image in qemu and wait for a marker on the serial console.
    Boot {
        /// The image (raw, qcow2, vmdk or vhd).
        image: PathBuf,
        /// Firmware.
        #[arg(long, value_enum, default_value = "uefi")]
        firmware: build_image::qemu::Firmware,
        /// Text that means the appliance is up (default: the recipe's smoke.expect, from the manifest).
        #[arg(long)]
        expect: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Accelerator: auto uses KVM only when a short probe answers.
        #[arg(long, value_enum, default_value = "auto")]
        accel: build_image::qemu::Accel,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory: u32,
        /// Extra disks (virtio), repeatable.
        #[arg(long)]
        drive: Vec<PathBuf>,
        /// Host port forwards for the user network, e.g. tcp:127.0.0.1:8080-:80; repeatable.
        #[arg(long)]
        hostfwd: Vec<String>,
        /// Let the guest reach the host's networks (by default it cannot:
        /// no build machine's metadata service or internet leaks in).
        #[arg(long)]
        outbound: bool,
        /// Serial log file (default: IMAGE.serial.log).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Print the JSON Schema of recipe.json.
    Schema,
    /// Download the pinned Debian packages of the lock into the cache, each
    /// with exactly its locked sha256; creates the lock when there is none.
    ///
    /// Each pinned version is looked for in the cache, then in apt's archive
    /// (refreshing apt's lists once when it lacks the version), then in the
    /// snapshot archive. A version that none has is an error: pinned means
    /// pinned; `--update-lock` re-pins to what the archive has now.
    Fetch {
        /// Re-pin the lock to Debian's current versions first (the default
        /// packages, and those added with --add with their dependencies).
        #[arg(long)]
        update_lock: bool,
        /// Pin this package and everything apt installs with it (Depends,
        /// Pre-Depends; no Recommends) into the lock, then fetch. Repeatable.
        /// A `{"deb": "NAME"}` layer then unpacks the whole set.
        #[arg(long, value_name = "NAME")]
        add: Vec<String>,
        /// Pin a Debian root set: these packages (comma-separated, as a
        /// `{"debian": {"packages": [...]}}` layer lists them) together with
        /// Debian's base (Essential and Priority: required packages, apt,
        /// usr-is-merged), resolved jointly by apt on an empty system, then
        /// fetch. Repeatable. A `debian` layer with exactly these names
        /// installs that set; --update-lock resolves each set anew.
        #[arg(long, value_name = "NAME,NAME,...")]
        add_root: Vec<String>,
        /// Folder to look for the lock from (it and the folders above it);
        /// without one there, the lock is created as DIR/packages.lock.
        #[arg(long, default_value = ".", value_name = "DIR")]
        project: PathBuf,
        /// Root of a Debian snapshot archive (with its pool/) to fetch pinned
        /// versions that apt's archive no longer has, e.g.
        /// https://snapshot.debian.org/archive/debian/20261101T000000Z/.
        /// Same as $BUILD_IMAGE_SNAPSHOT.
        #[arg(long, value_name = "URL")]
        snapshot: Option<String>,
    },
    /// Convert a raw disk image to qcow2, VMDK (streamOptimized) or VHD.
    Convert {
        /// Path to a raw disk image.
        image: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        to: ConvertTo,
        /// qcow2: compress clusters (deflate), like `qemu-img convert -c`.
        #[arg(long)]
        compress: bool,
        /// Output file (default: the image with the format's extension).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Leave the output in the page cache instead of writing it to the
        /// disk before the rename, as `qemu-img convert` does by default
        /// (its `-t unsafe`). Faster; but if the machine crashes soon
        /// after, the file may be incomplete. For outputs you use at once
        /// (upload, boot) and can make again.
        #[arg(long)]
        no_sync: bool,
    },
    /// Write a raw image onto a disk (or into a file), then read it back to
    /// verify. Refuses a disk that is mounted, used as swap or holds the
    /// running system; asks before writing to a disk unless --yes.
    Flash {
        /// Path to a raw disk image.
        image: PathBuf,
        /// Block device (e.g. /dev/sdb) or file to write to.
        target: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Upload an image to OpenStack Glance (v2, Keystone v3 auth), with boot
    /// properties from its manifest; checks Glance's sha512 against ours.
    ///
    /// Settings come from clouds.yaml (./, ~/.config/openstack/,
    /// /etc/openstack/, or OS_CLIENT_CONFIG_FILE) or the OS_* variables, like
    /// the openstack CLI.
    Upload {
        /// Image file: .raw, .qcow2, .vmdk or .vhd (NAME.manifest.json beside it
        /// gives the boot properties).
        image: PathBuf,
        /// Cloud name in clouds.yaml (default: OS_CLOUD, the OS_* variables, or
        /// the only cloud).
        #[arg(long)]
        cloud: Option<String>,
        /// Image name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Extra image property KEY=VALUE (repeatable), e.g. os_distro=debian.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// Image visibility.
        #[arg(long, value_parser = ["private", "shared", "community", "public"])]
        visibility: Option<String>,
        /// Seconds to wait for the image to become active after the upload.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ConvertTo {
    Qcow2,
    Vmdk,
    Vhd,
}

const VERBS: [&str; 10] = ["build", "init", "inspect", "schema", "fetch", "boot", "convert", "flash", "upload", "help"];

/// Turn `build-image [flags] RECIPE …` into `build-image [flags] build RECIPE …`.
fn with_default_verb(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().skip(1).position(|a| !a.starts_with('-')).map(|i| i + 1) {
        if !VERBS.contains(&args[i].as_str()) {
            args.insert(i, "build".into());
        }
    }
    args
}

fn env_epoch() -> Result<Option<i64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map(Some).map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds: unset it or fix it"))
        }
        _ => Ok(None),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build { recipe, out, agent } => {
            let opts = build_image::pipeline::BuildOptions {
                out_dir: out,
                env_epoch: env_epoch().map_err(anyhow::Error::msg)?,
                progress: !cli.quiet,
                agent,
            };
            let res = build_image::pipeline::build(&recipe, &opts)?;
            for w in &res.warnings {
                eprintln!("warning: {w}");
            }
            if !cli.quiet {
                for a in &res.manifest.artifacts {
                    eprintln!("wrote {}/{} ({} bytes, sha256 {})", opts.out_dir.display(), a.file, a.size, a.sha256);
                }
                eprintln!("wrote {}", res.manifest_path.display());
            }
        }
        Command::Init { dir, name } => {
            let r = build_image::init::init(&dir, name.as_deref())?;
            if !cli.quiet {
                eprintln!("wrote {} into {}: see its README.md", r.files.join(", "), r.dir.display());
                eprintln!("next: cd {} && build-image fetch && build-image build recipe.json", r.dir.display());
            }
        }
        Command::Inspect { image, config_drive, json } => {
            let r = image.as_deref().map(build_image::inspect::inspect).transpose()?;
            let d = config_drive.as_deref().map(build_image::inspect::config_drive::inspect).transpose()?;
            if json {
                let v = match (&r, &d) {
                    (Some(r), None) => serde_json::to_value(r)?,
                    (r, d) => {
                        let mut v = r.as_ref().map(serde_json::to_value).transpose()?.unwrap_or_else(|| serde_json::json!({}));
                        v["config_drive"] = serde_json::to_value(d)?;
                        v
                    }
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if let Some(r) = &r {
                    print!("{}", r.render());
                }
                if let Some(d) = &d {
                    print!("{}", d.render());
                }
            }
        }
        Command::Boot { image, firmware, expect, timeout, accel, memory, drive, hostfwd, outbound, log } => {
            let o = build_image::qemu::BootOptions {
                image,
                firmware,
                expect,
                timeout: std::time::Duration::from_secs(timeout),
                accel,
                memory_mib: memory,
                drives: drive,
                hostfwd,
                outbound,
                echo: !cli.quiet,
                log,
            };
            let r = build_image::qemu::boot(&o)?;
            eprintln!("\nbuild-image: `{}` after {:.1} s ({:?}; log {})", r.marker, r.seconds, r.accel, r.log.display());
        }
        Command::Schema => print!("{}", build_image::recipe::schema_json()),
        Command::Fetch { update_lock, add, add_root, project, snapshot } => {
            use build_image::boot::packages;
            let lock = packages::find_lock(&project).unwrap_or_else(|| project.join(packages::LOCK_NAMES[0]));
            let add_roots = add_root.iter().map(|r| packages::root_names(r)).collect();
            let opts = packages::FetchOptions { update_lock, add, add_roots, snapshot };
            for line in packages::fetch(&lock, &packages::cache_dir(), &opts)? {
                if !cli.quiet || !line.starts_with("ok ") {
                    eprintln!("{line}");
                }
            }
        }
        Command::Flash { image, target, yes } => {
            let opts = build_image::flash::FlashOptions { yes, progress: !cli.quiet };
            let r = build_image::flash::flash(&image, &target, &opts, build_image::flash::ask_on_terminal)?;
            let zeroed = if r.zeroed > 0 { format!(" ({} of them zeroed by the device, BLKZEROOUT)", r.zeroed) } else { String::new() };
            eprintln!(
                "wrote {} bytes{zeroed} to {} in {:.1} s; verified: read back sha256 {} matches the image",
                r.bytes,
                target.display(),
                r.seconds,
                r.sha256
            );
        }
        Command::Upload { image, cloud, name, properties, visibility, timeout } => {
            let mut props = Vec::new();
            for p in properties {
                let (k, v) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("--property `{p}`: write it as KEY=VALUE"))?;
                props.push((k.to_string(), v.to_string()));
            }
            let opts = build_image::cloud::UploadOptions {
                cloud,
                name,
                properties: props,
                visibility,
                progress: !cli.quiet,
                timeout: Some(std::time::Duration::from_secs(timeout)),
            };
            let r = build_image::cloud::upload(&image, &opts)?;
            eprintln!("uploaded {} as image {} ({}), {} bytes, sha512 matches Glance's", image.display(), r.id, r.name, r.size);
            println!("{}", r.id);
        }
        Command::Convert { image, to, compress, output, no_sync } => {
            use build_image::output::convert::{convert, Format};
            let to = match to {
                ConvertTo::Qcow2 => Format::Qcow2,
                ConvertTo::Vmdk => Format::Vmdk,
                ConvertTo::Vhd => Format::Vhd,
            };
            let t = std::time::Instant::now();
            let dest = convert(&image, to, compress, output.as_deref(), !no_sync)?;
            if !cli.quiet {
                eprintln!("wrote {} in {:.2} s", dest.display(), t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_verb(std::env::args().collect()));
    // --lock and --cache reach every place that opens the lock through the
    // environment, as the variables they stand for. Set here, before any
    // thread starts.
    for (var, value) in [(build_image::boot::packages::LOCK_ENV, &cli.lock), (build_image::boot::packages::CACHE_ENV, &cli.cache)] {
        if let Some(v) = value {
            let abs = std::path::absolute(v).unwrap_or_else(|_| v.clone());
            std::env::set_var(var, abs);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
