//! The `build-image` command line: parses arguments and dispatches to the
//! library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build reproducible, bootable appliance disk images from one recipe.json,
/// without root, loop devices or host mkfs tools.
///
/// `build-image RECIPE` is short for `build-image build RECIPE`.
#[derive(Debug, Parser)]
#[command(name = "build-image", version, propagate_version = true)]
struct Cli {
    /// Quiet: no progress on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
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
    },
    /// Read an image and show its partition table and filesystems.
    Inspect {
        /// Path to a raw disk image.
        image: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of recipe.json.
    Schema,
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
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ConvertTo {
    Qcow2,
    Vmdk,
    Vhd,
}

const VERBS: [&str; 7] = ["build", "inspect", "schema", "convert", "flash", "upload", "help"];

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
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds: unset it or fix it")),
        _ => Ok(None),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build { recipe, out } => {
            let opts = build_image::pipeline::BuildOptions {
                out_dir: out,
                env_epoch: env_epoch().map_err(anyhow::Error::msg)?,
                progress: !cli.quiet,
            };
            let res = build_image::pipeline::build(&recipe, &opts)?;
            if !cli.quiet {
                for a in &res.manifest.artifacts {
                    eprintln!("wrote {}/{} ({} bytes, sha256 {})", opts.out_dir.display(), a.file, a.size, a.sha256);
                }
                eprintln!("wrote {}", res.manifest_path.display());
            }
        }
        Command::Inspect { image, json } => {
            let r = build_image::inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.render());
            }
        }
        Command::Schema => print!("{}", build_image::recipe::schema_json()),
        Command::Convert { image, to, compress, output } => {
            use build_image::output::convert::{convert, Format};
            let to = match to {
                ConvertTo::Qcow2 => Format::Qcow2,
                ConvertTo::Vmdk => Format::Vmdk,
                ConvertTo::Vhd => Format::Vhd,
            };
            let t = std::time::Instant::now();
            let dest = convert(&image, to, compress, output.as_deref())?;
            if !cli.quiet {
                eprintln!("wrote {} in {:.2} s", dest.display(), t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_verb(std::env::args().collect()));
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
