//! OEM layers and container images as appliances, checked with the real
//! tools: `fsck.fat`, mtools (`mtype`, `mdir`), `debugfs`, `cpio`.
//!
//! The OCI test needs the pinned packages (`./build.sh fetch`).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest;

/// A scratch folder inside the project (so package names resolve through
/// kernel/packages.lock), removed on drop.
fn scratch() -> tempfile::TempDir {
    let base = root().join("out/test-recipes");
    fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn oem_recipe(fs_kind: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "oem",
        "source_date_epoch": 1_700_000_000,
        "trees": {"oemextra": [{"file": "/config.d/10-site.json", "content": "{\"hostname\": \"site\"}\n"}]},
        "oem": {
            "platform": "qemu",
            "hostname": "node01",
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOem test@host"],
            "network": {"services": [{"type": "dns", "address": "188.93.16.19"}]}
        },
        "disk": {"partitions": [
            {"label": "ESP", "type": "esp", "size": "34MiB"},
            {"label": "OEM", "type": "linux", "size": "34MiB", "filesystem": fs_kind, "tree": "oemextra"}
        ]},
        "outputs": ["raw"]
    })
}

fn build_in(w: &Path, recipe: &serde_json::Value) -> PathBuf {
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    w.join("out").join(format!("{}.raw", recipe["name"].as_str().unwrap()))
}

fn oem_partition(image: &Path, dest: &Path) {
    let parts = sfdisk(image);
    let (_, _, start, size) = parts.iter().find(|p| p.0 == "OEM").expect("an OEM partition in the GPT").clone();
    extract(image, start, size, dest);
}

fn check_merged(v: &serde_json::Value) {
    assert_eq!(v["platform"], "qemu");
    assert_eq!(v["user"], "core", "default user");
    assert_eq!(v["hostname"], "node01");
    assert_eq!(v["network"]["networks"][0]["type"], "ipv4_dhcp", "qemu platform: DHCP");
    assert_eq!(v["network"]["networks"][0]["link"], "*");
    assert_eq!(v["network"]["services"][0]["address"], "188.93.16.19");
    assert_eq!(v["ssh_authorized_keys"].as_array().unwrap().len(), 1);
    assert_eq!(v["metadata"]["sources"], serde_json::json!([]));
}

/// A FAT OEM partition: fsck.fat is clean, mtools reads the merged config
/// and the layers, the partition's own tree is there too, and `inspect`
/// reads it back with each key's layer.
#[test]
fn oem_partition_vfat_is_read_back_by_mtools_and_inspect() {
    let t = scratch();
    let image = build_in(t.path(), &oem_recipe("vfat"));
    // Reproducible: a second build elsewhere gives the same bytes.
    let again = scratch();
    assert_eq!(sha256(&build_in(again.path(), &oem_recipe("vfat"))), sha256(&image), "OEM partition not reproducible");
    let part = t.path().join("oem.part");
    oem_partition(&image, &part);
    let p = part.to_str().unwrap();
    let (ok, out) = tool("fsck.fat", &["-n", p]);
    assert!(ok, "fsck.fat: {out}");
    assert!(out.contains("OEM") || tool("fatlabel", &[p]).1.trim() == "OEM", "label OEM: {out}");
    let (ok, config) = tool("mtype", &["-i", p, "::/config.json"]);
    assert!(ok, "mtype: {config}");
    check_merged(&serde_json::from_str(&config).unwrap_or_else(|e| panic!("config.json: {e}\n{config}")));
    let (ok, dir) = tool("mdir", &["-b", "-i", p, "::/layers"]);
    assert!(ok, "{dir}");
    for l in ["00-defaults.json", "10-platform-qemu.json", "20-recipe.json"] {
        assert!(dir.contains(l), "layer {l} missing: {dir}");
    }
    let (ok, platform) = tool("mtype", &["-i", p, "::/layers/10-platform-qemu.json"]);
    assert!(ok);
    let want: serde_json::Value = serde_json::from_slice(&fs::read(root().join("oem/platforms/qemu/oem.json")).unwrap()).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&platform).unwrap(), want, "layer 10 is the platform file");
    let (ok, site) = tool("mtype", &["-i", p, "::/config.d/10-site.json"]);
    assert!(ok && site.contains("site"), "the partition's tree is there too: {site}");

    // inspect --json: the effective configuration and who set each key.
    let o = run(t.path(), &["inspect", "--json", image.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let oem = &r["oem"];
    assert!(oem["problem"].is_null(), "{oem}");
    check_merged(&oem["config"]);
    let by = |k: &str| {
        oem["keys"].as_array().unwrap().iter().find(|e| e["key"] == k).unwrap_or_else(|| panic!("{k} missing: {oem}"))["layer"].clone()
    };
    // The partition tree's /config.d/10-site.json is layer 30, over the recipe's hostname.
    assert_eq!(by("hostname"), "30-config.d-10-site");
    assert_eq!(oem["effective"]["hostname"], "site");
    assert_eq!(oem["config_d"], serde_json::json!(["10-site.json"]));
    assert_eq!(by("user"), "00-defaults");
    assert_eq!(by("network.networks"), "10-platform-qemu");
    assert_eq!(by("network.services"), "20-recipe");
    assert_eq!(by("metadata.sources"), "10-platform-qemu");
    // And the table.
    let o = run(t.path(), &["inspect", image.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.lines().any(|l| l.contains("hostname") && l.contains("30-config.d-10-site") && l.contains("site")), "{table}");
    assert!(table.lines().any(|l| l.contains("platform") && l.contains("20-recipe") && l.contains("qemu")), "{table}");

    // Edit config.json in the image behind the builder's back: inspect notices.
    let edited = t.path().join("edited.json");
    fs::write(&edited, config.replace("node01", "edited")).unwrap();
    let (ok, out) = tool("mcopy", &["-o", "-i", p, edited.to_str().unwrap(), "::/config.json"]);
    assert!(ok, "{out}");
    let parts = sfdisk(&image);
    let (_, _, start, _) = parts.iter().find(|p| p.0 == "OEM").unwrap().clone();
    let img = fs::OpenOptions::new().write(true).open(&image).unwrap();
    use std::os::unix::fs::FileExt;
    img.write_all_at(&fs::read(&part).unwrap(), start).unwrap();
    let o = run(t.path(), &["inspect", "--json", image.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["oem"]["problem"].as_str().unwrap_or("").contains("differs"), "{}", r["oem"]);
    assert_eq!(r["oem"]["config"]["hostname"], "edited");
}

/// An ext4 OEM partition holds the same files (debugfs reads them), and
/// inspect reads the same configuration from them.
#[test]
fn oem_partition_ext4_holds_the_files() {
    let t = scratch();
    let image = build_in(t.path(), &oem_recipe("ext4"));
    let part = t.path().join("oem.part");
    oem_partition(&image, &part);
    let p = part.to_str().unwrap();
    let (ok, out) = tool("e2fsck", &["-fn", p]);
    assert!(ok, "e2fsck: {out}");
    let (ok, config) = tool("debugfs", &["-R", "cat /config.json", p]);
    assert!(ok, "{config}");
    // tool() appends debugfs's stderr banner after the file.
    let json = &config[config.find('{').expect("JSON in debugfs output")..=config.rfind('}').unwrap()];
    check_merged(&serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {config}")));
    let o = run(t.path(), &["inspect", "--json", image.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["oem"]["problem"].is_null(), "{}", r["oem"]);
    assert_eq!(
        r["oem"]["config"],
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        "inspect and debugfs read the same /config.json"
    );
    // The tree's /config.d/10-site.json is layer 30.
    assert_eq!(r["oem"]["effective"]["hostname"], "site");
}

/// A container image in an OCI layout archive, built here with the `tar`
/// crate: two layers (gzip and zstd), the second deleting a file by
/// whiteout and making a directory opaque.
fn oci_archive(dest: &Path) {
    oci_archive_with_user(dest, "0:0")
}

fn oci_archive_with_user(dest: &Path, user: &str) {
    fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        let dir = path.ends_with('/');
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    fn layer(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d, m) in files {
            entry(&mut b, p, d, *m);
        }
        b.into_inner().unwrap()
    }
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let l1 = layer(&[
        ("etc/", b"", 0o755),
        ("etc/motd", b"lower\n", 0o644),
        ("etc/secret", b"s3cret\n", 0o600),
        ("srv/www/", b"", 0o755),
        ("srv/www/old.html", b"old\n", 0o644),
    ]);
    let l2 = layer(&[
        ("etc/.wh.secret", b"", 0o644),
        ("srv/www/.wh..wh..opq", b"", 0o644),
        ("srv/www/index.html", b"<h1>from the container</h1>\n", 0o644),
        ("app/run.sh", b"#!/bin/sh\necho \"APP: $GREETING from $(pwd) as $(id -u):$(id -g)\"\n", 0o755),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l1).unwrap();
    let l1 = gz.finish().unwrap();
    let l2 = zstd::encode_all(&l2[..], 3).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh", "/app/run.sh"], "Cmd": ["--port", "80"],
                   "Env": ["PATH=/bin:/usr/bin", "GREETING=hello oci"], "WorkingDir": "/srv/www", "User": user},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": format!("sha256:{}", sha(b)), "size": b.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &l1), desc("application/vnd.oci.image.layer.v1.tar+zstd", &l2)]
    }))
    .unwrap();
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &manifest)]}),
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    entry(&mut b, "index.json", &index, 0o644);
    for blob in [&config, &manifest, &l1, &l2] {
        entry(&mut b, &format!("blobs/sha256/{}", sha(blob)), blob, 0o644);
    }
    fs::write(dest, b.into_inner().unwrap()).unwrap();
}

/// A fake guest agent: any executable will do for a build.
fn fake_agent(dir: &Path) -> PathBuf {
    let p = dir.join("fake-agent");
    fs::write(&p, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn unpack_initramfs(image: &Path, into: &Path) -> String {
    fs::create_dir_all(into).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -idm --quiet --no-absolute-filenames < '{}'", image.display()))
        .current_dir(into)
        .status()
        .unwrap();
    assert!(st.success(), "cpio -i failed");
    let (ok, list) = tool("sh", &["-c", &format!("cpio -t --quiet < '{}'", image.display())]);
    assert!(ok, "{list}");
    list
}

/// The OCI layer's files, whiteouts applied, are in the initramfs that cpio
/// unpacks; the image config becomes /etc/agent/{init,env,workdir,user};
/// the recipe's `init` replaces only the command. OEM files go into the
/// initramfs when there is no OEM partition.
#[test]
fn oci_image_becomes_the_appliance() {
    let t = scratch();
    let w = t.path();
    oci_archive(&w.join("image.tar"));
    let agent = fake_agent(w);
    let mut recipe = serde_json::json!({
        "name": "oci",
        "source_date_epoch": 1_700_000_000,
        "trees": {"initrd": [{"deb": "busybox-static"}, {"symlink": "/bin/sh", "target": "busybox"}, {"oci": "image.tar"}]},
        "initramfs": {"tree": "initrd", "compression": "none"},
        "kernel": {"package": "linux-image-cloud-amd64"},
        "oem": {"platform": "vpc", "hostname": "box"},
        "outputs": ["initramfs"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out", "--agent", agent.to_str().unwrap()]);
    let x = w.join("x");
    let list = unpack_initramfs(&w.join("out/oci.initramfs"), &x);
    assert_eq!(fs::read_to_string(x.join("etc/motd")).unwrap(), "lower\n");
    assert!(!x.join("etc/secret").exists() && !list.contains("secret"), "whiteout: {list}");
    assert!(!list.contains(".wh."), "no whiteout files: {list}");
    assert!(!x.join("srv/www/old.html").exists(), "opaque dir");
    assert!(fs::read_to_string(x.join("srv/www/index.html")).unwrap().contains("from the container"));
    assert_eq!(fs::read_to_string(x.join("etc/agent/init")).unwrap(), "/bin/sh\n/app/run.sh\n--port\n80\n");
    assert_eq!(fs::read_to_string(x.join("etc/agent/env")).unwrap(), "PATH=/bin:/usr/bin\nGREETING=hello oci\n");
    assert_eq!(fs::read_to_string(x.join("etc/agent/workdir")).unwrap(), "/srv/www\n");
    assert_eq!(fs::read_to_string(x.join("etc/agent/user")).unwrap(), "0:0\n");
    // OEM without an OEM partition: in the initramfs.
    let oem: serde_json::Value = serde_json::from_slice(&fs::read(x.join("etc/agent/oem.json")).unwrap()).unwrap();
    assert_eq!(oem["hostname"], "box");
    assert_eq!(oem["metadata"]["sources"], serde_json::json!(["config-drive", "metadata-service"]));
    assert_eq!(fs::read(x.join("usr/share/oem/config.json")).unwrap(), fs::read(x.join("etc/agent/oem.json")).unwrap());
    assert!(x.join("usr/share/oem/layers/10-platform-vpc.json").exists());

    // The recipe's init replaces the command, not the environment.
    recipe["init"] = serde_json::json!(["/bin/sh", "-c", "echo override"]);
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out", "--agent", agent.to_str().unwrap()]);
    let y = w.join("y");
    unpack_initramfs(&w.join("out/oci.initramfs"), &y);
    assert_eq!(fs::read_to_string(y.join("etc/agent/init")).unwrap(), "/bin/sh\n-c\necho override\n");
    assert_eq!(fs::read_to_string(y.join("etc/agent/env")).unwrap(), "PATH=/bin:/usr/bin\nGREETING=hello oci\n");
}

/// The container's entrypoint runs as the appliance under qemu with the real
/// guest agent (built into build-image): its Env, WorkingDir and User apply.
#[test]
fn oci_entrypoint_boots_with_env_workdir_and_user() {
    let t = scratch();
    let w = t.path();
    // Run as uid 1000 (the archive is rebuilt rather than patched: the
    // config is digest-checked).
    oci_archive_with_user(&w.join("image.tar"), "1000:1000");
    let recipe = serde_json::json!({
        "name": "ociboot",
        "source_date_epoch": 1_700_000_000,
        "trees": {"initrd": [{"deb": "busybox-static"}, {"symlink": "/bin/sh", "target": "busybox"},
                             {"symlink": "/bin/id", "target": "busybox"}, {"symlink": "/bin/pwd", "target": "busybox"},
                             {"oci": "image.tar"}]},
        "initramfs": {"tree": "initrd"},
        "kernel": {"package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 panic=-1"},
        "disk": {"partitions": [{"label": "ESP", "type": "esp", "size": "64MiB"}]},
        "outputs": ["raw"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    let o = run(
        w,
        &[
            "boot",
            "-q",
            "out/ociboot.raw",
            "--firmware",
            "uefi",
            "--accel",
            "tcg",
            "--expect",
            "APP: hello oci from /srv/www as 1000:1000",
            "--timeout",
            "240",
        ],
    );
    let log = fs::read_to_string(w.join("out/ociboot.raw.serial.log")).unwrap_or_default();
    assert!(o.status.success(), "boot failed:\n{}\n{log}", String::from_utf8_lossy(&o.stderr));
}
