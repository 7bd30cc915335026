//! The `oci` output (`NAME.oci.tar`), checked with the real tools: GNU
//! `tar`, `sha256sum`, `skopeo` (inspect, copy to a docker-archive and to
//! an OCI layout folder), `umoci unpack` (the rootfs it makes, file by
//! file) and, as root, Debian 12's Docker 20.10 (`docker load`, `docker
//! run`; the daemon from the locked docker.io package, in its own
//! namespaces). Reproducible across folders, TZ and umask; bad recipes fail
//! with the JSON path and leave nothing behind.
//!
//! Needs the pinned packages (`./build.sh fetch`: busybox-static, and
//! docker.io, containerd and runc for the Docker test) and `skopeo` and
//! `umoci` (`./build.sh deps`).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const TAG: &str = "example.com/build-image/ocitest:1.0";

/// A scratch folder inside the project (so package names resolve through
/// kernel/packages.lock), removed on drop.
fn scratch() -> tempfile::TempDir {
    let base = root().join("out/test-recipes");
    fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A tar layer with what `file`/`mkdir`/`symlink` layers cannot make: a
/// hardlink, a character and a block device, a fifo, a name longer than
/// 100 bytes and an xattr (in a pax header), with uid 1000.
fn input_tar(dest: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, data: &[u8], link: Option<&str>, dev: Option<(u32, u32)>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some((major, minor)) = dev {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    use tar::EntryType as T;
    add("data/", T::Directory, 0o755, 0, b"", None, None);
    add("data/file", T::Regular, 0o644, 1000, b"hard linked\n", None, None);
    add("data/hard", T::Link, 0o644, 1000, b"", Some("data/file"), None);
    add("dev/null", T::Char, 0o666, 0, b"", None, Some((1, 3)));
    add("dev/sda", T::Block, 0o660, 0, b"", None, Some((8, 0)));
    add("run/fifo", T::Fifo, 0o600, 0, b"", None, None);
    add(&format!("data/{}/long-file-name", "x".repeat(150)), T::Regular, 0o644, 0, b"long\n", None, None);
    // A pax header with an xattr, then its file.
    let record = "SCHILY.xattr.user.test=hello\n";
    let record = format!("{} {record}", record.len() + 3);
    add("PaxHeaders/caps", T::XHeader, 0o644, 0, record.as_bytes(), None, None);
    add("data/caps", T::Regular, 0o755, 0, b"\x7fELF", None, None);
    fs::write(dest, b.into_inner().unwrap()).unwrap();
}

fn recipe() -> serde_json::Value {
    serde_json::json!({
        "name": "ocitest",
        "source_date_epoch": 1_700_000_000,
        "trees": {"root": [
            {"deb": "busybox-static"},
            {"symlink": "/bin/sh", "target": "busybox"},
            {"mkdir": "/tmp", "mode": "01777"},
            {"file": "/srv/www/index.html", "content": "<h1>hello from the layer</h1>\n"},
            {"file": "/usr/local/bin/hello", "content": "#!/bin/sh\necho hello\n", "mode": "04755"},
            {"file": "/etc/app.conf", "content": "secret\n", "mode": "0600", "uid": 1000, "gid": 1000},
            {"symlink": "/etc/alt", "target": "/srv/www/index.html"},
            {"tar": "in.tar"}
        ]},
        "oci": {
            "tree": "root", "tag": TAG,
            "entrypoint": ["/bin/busybox", "httpd", "-f"], "cmd": ["-p", "80", "-h", "/srv/www"],
            "env": ["PATH=/bin", "GREETING=hello oci"], "working_dir": "/srv/www", "user": "1000:1000",
            "exposed_ports": ["80"], "labels": {"org.opencontainers.image.title": "ocitest"}
        },
        "outputs": ["oci"]
    })
}

/// Write the recipe and its tar input into `w`.
fn project(w: &Path, recipe: &serde_json::Value) -> PathBuf {
    input_tar(&w.join("in.tar"));
    let r = w.join("r.json");
    fs::write(&r, serde_json::to_string_pretty(recipe).unwrap()).unwrap();
    r
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let (ok, out) = tool(cmd, args);
    assert!(ok, "{cmd} {args:?}:\n{out}");
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// `sha256sum FILE` (the real tool).
fn sha256sum(p: &Path) -> String {
    ok("sha256sum", &[p.to_str().unwrap()]).split_whitespace().next().unwrap().to_string()
}

/// Every path under `dir` (not `dir` itself), relative, sorted.
fn walk(dir: &Path) -> Vec<String> {
    fn go(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                go(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    go(dir, dir, &mut v);
    v.sort();
    v
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer of the length passed.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

#[test]
fn oci_output_is_read_by_skopeo_and_umoci() {
    let t = scratch();
    let w = t.path();
    project(w, &recipe());
    bin(); // built before the clock starts
    let started = std::time::Instant::now();
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    eprintln!("build: {:?}", started.elapsed());
    let image = w.join("out/ocitest.oci.tar");
    let path = image.to_str().unwrap();
    eprintln!("ocitest.oci.tar: {} bytes", fs::metadata(&image).unwrap().len());

    // The build manifest lists it with its sha256, and the image's digests.
    let m = json(&fs::read_to_string(w.join("out/ocitest.manifest.json")).unwrap());
    let artifact = m["artifacts"].as_array().unwrap().iter().find(|a| a["file"] == "ocitest.oci.tar").expect("listed").clone();
    assert_eq!(artifact["sha256"], sha256sum(&image));
    assert_eq!(artifact["size"], fs::metadata(&image).unwrap().len());
    let oci = &m["oci"];
    assert_eq!(oci["tag"], TAG);

    // GNU tar reads the outer tar; every blob is named by its sha256.
    let listing = ok("tar", &["-tf", path]);
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names.len(), 8, "{listing}");
    assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(names[5..], ["index.json", "manifest.json", "oci-layout"]);
    let x = w.join("x");
    fs::create_dir_all(&x).unwrap();
    ok("tar", &["-xf", path, "-C", x.to_str().unwrap()]);
    for n in &names[2..5] {
        assert_eq!(format!("blobs/sha256/{}", sha256sum(&x.join(n))), *n, "a blob not named by its digest");
    }
    let layer_digest = oci["layer_digest"].as_str().unwrap();
    let layer = x.join("blobs/sha256").join(layer_digest.trim_start_matches("sha256:"));
    assert_eq!(fs::metadata(&layer).unwrap().len(), oci["layer_size"]);

    // skopeo: the manifest's digest, architecture, the layer, the config.
    let inspect = json(&ok("skopeo", &["inspect", &format!("oci-archive:{path}")]));
    eprintln!("skopeo inspect: {inspect:#}");
    assert_eq!(inspect["Digest"], oci["manifest_digest"]);
    assert_eq!(inspect["Digest"], format!("sha256:{}", sha256sum(&x.join(names[4]))), "the manifest blob is the last blob");
    assert_eq!((inspect["Architecture"].as_str(), inspect["Os"].as_str()), (Some("amd64"), Some("linux")));
    assert_eq!(inspect["Layers"], serde_json::json!([format!("sha256:{}", sha256sum(&layer))]));
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(inspect["Env"], serde_json::json!(["PATH=/bin", "GREETING=hello oci"]));
    assert_eq!(inspect["Labels"], serde_json::json!({"org.opencontainers.image.title": "ocitest"}));
    let config = json(&ok("skopeo", &["inspect", "--config", &format!("oci-archive:{path}")]));
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/busybox", "httpd", "-f"]));
    assert_eq!(c["Cmd"], serde_json::json!(["-p", "80", "-h", "/srv/www"]));
    assert_eq!((c["WorkingDir"].as_str(), c["User"].as_str()), (Some("/srv/www"), Some("1000:1000")));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([layer_digest]));
    // The tag is the layout's reference name; another is not there.
    ok("skopeo", &["inspect", &format!("oci-archive:{path}:1.0")]);
    assert!(!tool("skopeo", &["inspect", &format!("oci-archive:{path}:2.0")]).0);

    // Copies: to a docker-archive (the same config blob) and an OCI folder.
    let docker = w.join("docker.tar");
    ok("skopeo", &["copy", "-q", &format!("oci-archive:{path}"), &format!("docker-archive:{}:{TAG}", docker.display())]);
    let config_hex = oci["config_digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert!(ok("tar", &["-tf", docker.to_str().unwrap()]).lines().any(|l| l == format!("{config_hex}.json")), "config kept");
    let layout = w.join("layout");
    ok("skopeo", &["copy", "-q", &format!("oci-archive:{path}"), &format!("oci:{}:1.0", layout.display())]);

    // The layer as GNU tar lists it: owners, hardlink, devices, fifo.
    let tv = ok("tar", &["--xattrs", "-tvf", layer.to_str().unwrap()]);
    // `tar -tv` columns: mode, owner, size or device, date, time, name.
    let line = |name: &str| -> Vec<&str> {
        let l = tv.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("{name}: {tv}"));
        l.split_whitespace().collect()
    };
    assert_eq!(line("etc/app.conf")[..2], ["-rw-------", "1000/1000"], "{tv}");
    assert_eq!(line("usr/local/bin/hello")[..2], ["-rwsr-xr-x", "0/0"], "{tv}");
    assert_eq!(line("tmp/")[0], "drwxrwxrwt", "{tv}");
    assert_eq!(line("data/hard link to data/file")[..3], ["hrw-r--r--", "1000/1000", "0"], "{tv}");
    assert_eq!(line("dev/null")[..3], ["crw-rw-rw-", "0/0", "1,3"], "{tv}");
    assert_eq!(line("dev/sda")[..3], ["brw-rw----", "0/0", "8,0"], "{tv}");
    assert_eq!(line("run/fifo")[0], "prw-------", "{tv}");
    assert_eq!(line("data/caps")[0], "-rwxr-xr-x*", "the xattr is marked: {tv}");
    assert_eq!(line("etc/alt -> /srv/www/index.html")[0], "lrwxrwxrwx", "{tv}");
    let layer_names = ok("tar", &["-tf", layer.to_str().unwrap()]);
    assert!(!layer_names.lines().any(|l| l.starts_with("./") || l.starts_with('/')), "no ./ or absolute names: {layer_names}");

    // umoci unpacks a rootfs with what the recipe put in.
    let bundle = w.join("bundle");
    ok("umoci", &["unpack", "--rootless", "--image", &format!("{}:1.0", layout.display()), bundle.to_str().unwrap()]);
    let r = bundle.join("rootfs");
    let entries = layer_names.lines().count();
    assert_eq!(walk(&r).len(), entries, "every layer entry and nothing else: {:?}", walk(&r));
    assert_eq!(fs::read_to_string(r.join("srv/www/index.html")).unwrap(), "<h1>hello from the layer</h1>\n");
    assert_eq!(mode(&r.join("srv/www/index.html")), 0o644);
    assert_eq!(fs::read_to_string(r.join("usr/local/bin/hello")).unwrap(), "#!/bin/sh\necho hello\n");
    assert_eq!(mode(&r.join("usr/local/bin/hello")), 0o4755);
    assert_eq!(mode(&r.join("tmp")), 0o1777);
    assert_eq!((fs::read_to_string(r.join("etc/app.conf")).unwrap().as_str(), mode(&r.join("etc/app.conf"))), ("secret\n", 0o600));
    assert_eq!(fs::read_link(r.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(fs::read_link(r.join("etc/alt")).unwrap(), Path::new("/srv/www/index.html"));
    let (f, h) = (fs::metadata(r.join("data/file")).unwrap(), fs::metadata(r.join("data/hard")).unwrap());
    assert_eq!((f.ino(), f.nlink()), (h.ino(), 2), "one inode, two names");
    assert_eq!(fs::read_to_string(r.join(format!("data/{}/long-file-name", "x".repeat(150)))).unwrap(), "long\n");
    assert_eq!(xattr(&r.join("data/caps"), "user.test").as_deref(), Some(&b"hello"[..]));
    assert!(fs::symlink_metadata(r.join("run/fifo")).unwrap().file_type().is_fifo());
    // busybox from the pinned package, whole: it runs.
    let o = Command::new(r.join("bin/busybox")).args(["echo", "busybox from the layer"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "busybox from the layer\n");
    // The runtime config umoci made from the image config.
    let rt = json(&fs::read_to_string(bundle.join("config.json")).unwrap());
    assert_eq!(rt["process"]["args"], serde_json::json!(["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/srv/www"]));
    assert_eq!(rt["process"]["cwd"], "/srv/www");
    assert!(rt["process"]["env"].as_array().unwrap().iter().any(|e| e == "GREETING=hello oci"), "{}", rt["process"]);
    // As root, umoci keeps owners and makes the devices.
    if is_root() {
        let b2 = w.join("bundle-root");
        ok("umoci", &["unpack", "--image", &format!("{}:1.0", layout.display()), b2.to_str().unwrap()]);
        let r = b2.join("rootfs");
        let md = fs::metadata(r.join("etc/app.conf")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000));
        let null = fs::symlink_metadata(r.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device() && null.rdev() == libc::makedev(1, 3), "{null:?}");
        let sda = fs::symlink_metadata(r.join("dev/sda")).unwrap();
        assert!(sda.file_type().is_block_device() && sda.rdev() == libc::makedev(8, 0), "{sda:?}");
    } else {
        eprintln!("not root: umoci's owners and devices are not checked");
    }
}

/// The same recipe from another folder, under another TZ and umask: the
/// same `NAME.oci.tar` and manifest, byte for byte.
#[test]
fn oci_output_is_reproducible_across_dirs_tz_and_umask() {
    let mut sums = Vec::new();
    for (tz, umask) in [("UTC", "022"), ("Pacific/Chatham", "077")] {
        let t = scratch();
        let w = t.path().join("deeper/project");
        fs::create_dir_all(&w).unwrap();
        let r = project(&w, &recipe());
        let out = t.path().join("elsewhere");
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" -q build \"$1\" --out \"$2\""))
            .arg(bin())
            .arg(&r)
            .arg(&out)
            .current_dir(t.path())
            .env("TZ", tz)
            .env("BUILD_IMAGE_CACHE", cache())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sums.push((sha256sum(&out.join("ocitest.oci.tar")), sha256sum(&out.join("ocitest.manifest.json"))));
    }
    assert_eq!(sums[0], sums[1], "NAME.oci.tar or its manifest differ between the two builds");
}

/// Each bad recipe fails naming the field, with a non-zero exit, and
/// writes nothing; a failure while writing the image (a whiteout name in
/// the tree) leaves the last good outputs as they were and no temp file.
#[test]
fn bad_oci_recipes_fail_with_the_json_path_and_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let base = serde_json::json!({
        "name": "bad", "trees": {"root": [{"file": "/a", "content": "a\n"}], "other": []},
        "oci": {"tree": "root"}, "outputs": ["oci"]
    });
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(d).map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        v.sort();
        v
    };
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("missing tree", serde_json::json!({"oci": {"tree": "nope"}}), "oci.tree`: no tree named `nope` in `trees` (have: other, root)"),
        ("no section", serde_json::json!({"oci": null}), "`outputs`: output `oci` needs an `oci` section"),
        ("bad tag", serde_json::json!({"oci": {"tag": "Example/App:1"}}), "oci.tag`: `Example` is not a valid repository name component"),
        ("bad port", serde_json::json!({"oci": {"exposed_ports": ["80/tcp", "http"]}}), "oci.exposed_ports[1]`"),
    ];
    for (what, change, expect) in cases {
        let mut r = base.clone();
        oem_rules::merge(&mut r, change);
        if r["oci"].is_null() {
            r.as_object_mut().unwrap().remove("oci");
        }
        fs::write(w.join("r.json"), r.to_string()).unwrap();
        let o = run(w, &["-q", "r.json", "--out", "out"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: the build succeeded");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(listing(&w.join("out")).is_empty(), "{what}: {:?}", listing(&w.join("out")));
    }
    // A good build, then one that fails while writing the image.
    fs::write(w.join("r.json"), base.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    let good = listing(&w.join("out"));
    assert_eq!(good, ["bad.manifest.json", "bad.oci.tar"]);
    let before = sha256(&w.join("out/bad.oci.tar"));
    let mut r = base.clone();
    r["trees"]["root"].as_array_mut().unwrap().push(serde_json::json!({"file": "/etc/.wh.passwd", "content": ""}));
    fs::write(w.join("r.json"), r.to_string()).unwrap();
    let o = run(w, &["-q", "r.json", "--out", "out"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("output `oci`") && err.contains("/etc/.wh.passwd") && err.contains("whiteout"), "{err}");
    assert_eq!(listing(&w.join("out")), good, "a temp file or a partial output was left");
    assert_eq!(sha256(&w.join("out/bad.oci.tar")), before);
}

/// A Docker daemon from the locked Debian 12 packages (docker.io 20.10,
/// containerd, runc), in its own mount, network and PID namespaces with its
/// state in `state`; killed with everything it started when dropped.
struct Dockerd {
    child: std::process::Child,
    sock: PathBuf,
    sys: PathBuf,
}

impl Dockerd {
    fn start(w: &Path, state: &Path) -> Dockerd {
        let packages = build_image::boot::packages::Packages::open(&root()).unwrap();
        let sys = w.join("docker-root");
        for name in ["docker.io", "containerd", "runc"] {
            let deb = cache().join("debs").join(packages.entry(name).unwrap().file_name());
            assert!(deb.is_file(), "{} is not in the package cache: ./build.sh fetch", deb.display());
            ok("dpkg-deb", &["-x", deb.to_str().unwrap(), sys.to_str().unwrap()]);
        }
        let script = r#"export PATH="$SYS/usr/bin:$SYS/usr/sbin:$PATH"; ip link set lo up 2>/dev/null
exec dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" -H "unix://$STATE/d.sock" \
  --storage-driver vfs --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false --userland-proxy=false"#;
        let log = fs::File::create(state.join("dockerd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script])
            .env("SYS", &sys)
            .env("STATE", state)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare");
        let d = Dockerd { child, sock: state.join("d.sock"), sys };
        let start = std::time::Instant::now();
        while !d.docker(&["version"]).0 {
            let log = fs::read_to_string(state.join("dockerd.log")).unwrap_or_default();
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "dockerd did not come up:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        d
    }

    /// The 20.10 client from the same package.
    fn docker(&self, args: &[&str]) -> (bool, String) {
        let host = format!("unix://{}", self.sock.display());
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        tool(self.sys.join("usr/bin/docker").to_str().unwrap(), &all)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGKILL to dockerd, unshare's child and the PID namespace's init:
        // the kernel kills the rest of the namespace (containerd), and
        // unshare reaps dockerd and exits. (Killing unshare first would
        // leave dockerd a zombie of the host's PID 1.)
        let id = self.child.id();
        let children = fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) on a child of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if children.trim().is_empty() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Debian 12's Docker (20.10, which reads only `manifest.json`) loads the
/// image under its tag with our config as its ID and our layer as its
/// one layer, and runs a container from it with the image's user,
/// working folder and environment. As root only (the daemon needs it).
#[test]
fn docker_20_10_loads_and_runs_the_image() {
    if !is_root() {
        eprintln!("oci_output: docker_20_10_loads_and_runs_the_image skipped: dockerd needs root");
        return;
    }
    let t = scratch();
    let w = t.path();
    project(w, &recipe());
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    let m = json(&fs::read_to_string(w.join("out/ocitest.manifest.json")).unwrap());
    // A short path for the daemon's sockets (at most 108 bytes).
    let state = tempfile::tempdir().unwrap();
    let d = Dockerd::start(w, state.path());
    let (ok, version) = d.docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(ok && version.starts_with("20.10."), "{version}");
    let (ok, out) = d.docker(&["load", "-i", w.join("out/ocitest.oci.tar").to_str().unwrap()]);
    assert!(ok && out.contains(&format!("Loaded image: {TAG}")), "docker load: {out}");
    let (ok, out) =
        d.docker(&["image", "inspect", TAG, "--format", "{{.Id}} {{json .RootFS.Layers}} {{.Os}}/{{.Architecture}} {{.Created}}"]);
    assert!(ok, "{out}");
    let want = format!(
        "{} [\"{}\"] linux/amd64 2023-11-14T22:13:20Z",
        m["oci"]["config_digest"].as_str().unwrap(),
        m["oci"]["layer_digest"].as_str().unwrap()
    );
    assert_eq!(out.trim(), want);
    let (ok, out) = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        TAG,
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; stat -c '%a %u:%g' /usr/local/bin/hello /etc/app.conf; cat /srv/www/index.html /data/hard",
    ]);
    assert!(ok, "docker run: {out}");
    assert_eq!(out, "hello oci\n/srv/www\n1000\n4755 0:0\n600 1000:1000\n<h1>hello from the layer</h1>\nhard linked\n");
}
