//! `build-image upload` against a real OpenStack Glance (and Keystone)
//! started on 127.0.0.1 by `tests/glance/*.sh` (a cached Python venv).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gunicorn server started by one of the scripts; killed on drop.
struct Server {
    pidfile: PathBuf,
}

impl Server {
    fn start(script: &str, args: &[&str], pidfile: PathBuf) -> Server {
        let o = Command::new("bash").arg(root().join("tests/glance").join(script)).args(args).output().unwrap();
        assert!(o.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        Server { pidfile }
    }

    fn master(&self) -> Option<i32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    /// SIGKILL the master and its workers, at once (no graceful shutdown).
    fn kill(&self) {
        let Some(m) = self.master() else { return };
        let mut pids = vec![m];
        for e in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(stat) = fs::read_to_string(e.path().join("stat")) {
                // pid (comm) state ppid …
                let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
                if after.split_whitespace().nth(1) == Some(&m.to_string()) {
                    if let Ok(p) = e.file_name().to_string_lossy().parse() {
                        pids.push(p);
                    }
                }
            }
        }
        for p in pids {
            // SAFETY: kill(2) on a pid this test started (or its worker).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = fs::remove_file(&self.pidfile);
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn glance(state: &Path, port: u16) -> Server {
    Server::start("start.sh", &[state.to_str().unwrap(), &port.to_string()], state.join("glance.pid"))
}

/// GET a Glance path as JSON (python3 is there: the venv needs it).
fn get(port: u16, path: &str) -> serde_json::Value {
    let o = Command::new("python3")
        .args(["-c", "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "GET {path}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sha512(path: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha512::new();
    std::io::copy(&mut fs::File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

fn build(w: &Path, name: &str) -> PathBuf {
    fs::create_dir_all(w.join("esp/EFI/BOOT")).unwrap();
    fs::write(w.join("esp/EFI/BOOT/BOOTX64.EFI"), bytes(5, 3 << 20)).unwrap();
    let recipe = serde_json::json!({
        "name": name,
        "trees": {"esp": [{"dir": "esp"}]},
        "disk": {"size": "1100MiB", "partitions": [
            {"label": "ESP", "type": "esp", "size": "64MiB", "filesystem": "vfat", "tree": "esp"},
            {"label": "data", "type": "linux", "size": "fill"}
        ]},
        "outputs": ["raw", "qcow2"]
    });
    fs::write(w.join(format!("{name}.json")), recipe.to_string()).unwrap();
    run_ok(w, &["-q", &format!("{name}.json"), "--out", "out"]);
    w.join("out").join(format!("{name}.raw"))
}

fn clouds_yaml(w: &Path, glance_port: u16, keystone: Option<(u16, &str)>) {
    let mut y = format!("clouds:\n  local:\n    auth_type: none\n    image_endpoint_override: http://127.0.0.1:{glance_port}\n");
    if let Some((kp, pw)) = keystone {
        y.push_str(&format!(
            "  lab:\n    region_name: RegionOne\n    auth:\n      auth_url: http://127.0.0.1:{kp}/v3\n      username: admin\n      password: \"{pw}\"\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n"
        ));
    }
    fs::write(w.join("clouds.yaml"), y).unwrap();
}

#[test]
fn upload_reaches_active_with_our_hash_and_boot_properties() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let raw = build(w, "up");
    let port = free_port();
    let _g = glance(&w.join("glance"), port);
    clouds_yaml(w, port, None);
    for (file, fmt) in [(raw.clone(), "raw"), (raw.with_extension("qcow2"), "qcow2")] {
        let o = Command::new(bin())
            .args(["-q", "upload", file.to_str().unwrap(), "--cloud", "local", "--property", "os_distro=debian"])
            .arg("--name")
            .arg(format!("up-{fmt}"))
            .current_dir(w)
            .output()
            .unwrap();
        assert!(o.status.success(), "upload: {}", String::from_utf8_lossy(&o.stderr));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let img = get(port, &format!("/v2/images/{id}"));
        assert_eq!(img["status"], "active", "{img}");
        assert_eq!(img["size"].as_u64(), Some(fs::metadata(&file).unwrap().len()));
        assert_eq!(img["os_hash_algo"], "sha512");
        assert_eq!(img["os_hash_value"].as_str(), Some(sha512(&file).as_str()));
        assert_eq!(img["disk_format"], fmt);
        assert_eq!(img["container_format"], "bare");
        assert_eq!(img["hw_firmware_type"], "uefi");
        assert_eq!(img["hw_disk_bus"], "virtio");
        assert_eq!(img["hw_vif_model"], "virtio");
        assert_eq!(img["os_type"], "linux");
        assert_eq!(img["os_distro"], "debian");
        assert_eq!(img["min_disk"], 2, "1100 MiB rounds up to 2 GiB");
    }
}

#[test]
fn an_interrupted_upload_leaves_no_active_image() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    // 1.5 GiB of mostly zeros: enough to still be streaming when the
    // server dies.
    let big = w.join("big.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&big).unwrap();
        f.set_len(1536 << 20).unwrap();
        f.write_all_at(&bytes(2, 1 << 20), 0).unwrap();
    }
    let port = free_port();
    let state = w.join("glance");
    let g = glance(&state, port);
    clouds_yaml(w, port, None);
    let child = Command::new(bin())
        .args(["-q", "upload", "big.raw", "--cloud", "local", "--name", "cut"])
        .current_dir(w)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until data is flowing into Glance's file store, then kill it.
    // (The single sync worker answers no API call while it receives.)
    let t0 = Instant::now();
    loop {
        let stored: u64 =
            fs::read_dir(state.join("images")).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0);
        if stored > 16 << 20 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the upload never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("data flowing after {:?}", t0.elapsed());
    g.kill();
    let o = child.wait_with_output().unwrap();
    eprintln!("client ended after {:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the upload cannot succeed without its server: {err}");
    assert!(err.contains("half-made image"), "the message says what became of the image: {err}");
    assert_eq!(err.trim().lines().filter(|l| !l.starts_with("  caused by")).count(), 1, "one-line error: {err}");
    // After a restart: no active image of that name.
    let _g2 = glance(&state, port);
    let imgs = get(port, "/v2/images?name=cut");
    let active: Vec<_> = imgs["images"].as_array().unwrap().iter().filter(|i| i["status"] == "active").collect();
    assert!(active.is_empty(), "an interrupted upload left an active image: {imgs}");
}

#[test]
fn keystone_password_auth_and_a_wrong_password() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let raw = build(w, "ks");
    let gport = free_port();
    let _g = glance(&w.join("glance"), gport);
    let kport = free_port();
    let password = "correct-horse-battery";
    let _k = Server::start(
        "keystone.sh",
        &[w.join("keystone").to_str().unwrap(), &kport.to_string(), password, &format!("http://127.0.0.1:{gport}")],
        w.join("keystone/keystone.pid"),
    );
    clouds_yaml(w, gport, Some((kport, password)));
    // Right password: token, catalog → Glance endpoint → active image.
    let o = Command::new(bin()).args(["-q", "upload", raw.to_str().unwrap(), "--cloud", "lab"]).current_dir(w).output().unwrap();
    assert!(o.status.success(), "upload via keystone: {}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(get(gport, &format!("/v2/images/{id}"))["status"], "active");
    // An application credential and a token, made with the admin's password
    // through Keystone's API, each authenticate an upload too.
    let made =
        Command::new("python3").arg("-c").arg(MAKE_CREDENTIALS).arg(format!("http://127.0.0.1:{kport}/v3")).arg(password).output().unwrap();
    assert!(made.status.success(), "making credentials: {}", String::from_utf8_lossy(&made.stderr));
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let auth_url = format!("http://127.0.0.1:{kport}/v3");
    let envs: [Vec<(&str, String)>; 2] = [
        vec![
            ("OS_AUTH_TYPE", "v3applicationcredential".into()),
            ("OS_APPLICATION_CREDENTIAL_ID", made["app_id"].as_str().unwrap().into()),
            ("OS_APPLICATION_CREDENTIAL_SECRET", made["app_secret"].as_str().unwrap().into()),
        ],
        vec![
            ("OS_AUTH_TYPE", "v3token".into()),
            ("OS_TOKEN", made["token"].as_str().unwrap().into()),
            ("OS_PROJECT_NAME", "admin".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
        ],
    ];
    for (i, env) in envs.iter().enumerate() {
        let mut c = Command::new(bin());
        c.args(["-q", "upload", raw.to_str().unwrap(), "--name"]).arg(format!("ks-{i}")).env("OS_AUTH_URL", &auth_url).current_dir(w);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "upload with {}: {}", env[0].1, String::from_utf8_lossy(&o.stderr));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(get(gport, &format!("/v2/images/{id}"))["status"], "active");
    }
    // Wrong password (from the environment this time): one line naming the
    // auth URL and the user, never the password.
    let o = Command::new(bin())
        .args(["-q", "upload", raw.to_str().unwrap()])
        .env("OS_AUTH_URL", format!("http://127.0.0.1:{kport}/v3"))
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", "not-the-password")
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env_remove("OS_CLOUD")
        .current_dir(w)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("http://127.0.0.1:{kport}/v3")) && err.contains("admin") && err.contains("401"), "{err}");
    assert!(!err.contains("not-the-password") && !err.contains(password), "a password leaked: {err}");
}

/// Python (stdlib only): with the admin password, make an application
/// credential and a token; print them as JSON.
const MAKE_CREDENTIALS: &str = r#"
import json, sys, urllib.request
url, pw = sys.argv[1], sys.argv[2]
def call(path, body, token=None):
    h = {"Content-Type": "application/json"}
    if token: h["X-Auth-Token"] = token
    r = urllib.request.urlopen(urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=h, method="POST"))
    return r.headers, json.loads(r.read())
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": pw}}},
                 "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
h, b = call("/auth/tokens", auth)
tok, uid = h["X-Subject-Token"], b["token"]["user"]["id"]
_, ac = call(f"/users/{uid}/application_credentials", {"application_credential": {"name": "build-image-test"}}, tok)
print(json.dumps({"token": tok, "app_id": ac["application_credential"]["id"], "app_secret": ac["application_credential"]["secret"]}))
"#;

/// What [`FaultProxy`] does to the image data (`PUT /v2/images/ID/file`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Forward everything: a healthy path to Glance.
    None,
    /// Take the whole body, never pass it on, and answer `500 Internal
    /// Server Error` (a store that failed after the upload).
    Status500,
    /// Pass on the first `CUT` bytes of the body, then close both
    /// connections (a load balancer or a node dying mid-stream).
    Close,
}

/// Bytes of the body passed on before [`Fault::Close`] closes.
const CUT: u64 = 8 << 20;

/// An HTTP/1.1 proxy on 127.0.0.1 in front of a real Glance that injects
/// a [`Fault`] into the image-data request and forwards everything else
/// byte for byte (requests are read head by head, so keep-alive works).
struct FaultProxy {
    port: u16,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fault = std::sync::Arc::new(std::sync::Mutex::new(Fault::None));
        let f = fault.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || {
                    let _ = Self::serve(c, upstream, &f);
                });
            }
        });
        FaultProxy { port, fault }
    }

    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    fn serve(client: std::net::TcpStream, upstream: u16, fault: &std::sync::Mutex<Fault>) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
        // Answers go back untouched.
        let (mut s_read, mut c_write) = (server.try_clone()?, client.try_clone()?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut s_read, &mut c_write);
            let _ = c_write.shutdown(std::net::Shutdown::Both);
        });
        let mut from_client = BufReader::new(client.try_clone()?);
        let mut to_server = server.try_clone()?;
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = Vec::new();
                if from_client.read_until(b'\n', &mut line)? == 0 {
                    let _ = server.shutdown(std::net::Shutdown::Write);
                    return Ok(());
                }
                head.extend_from_slice(&line);
                if line == b"\r\n" {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let length: u64 = text
                .lines()
                .find_map(|l| {
                    l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let data = text.starts_with("PUT ") && text.lines().next().is_some_and(|l| l.contains("/file "));
            let f = if data { *fault.lock().unwrap() } else { Fault::None };
            let mut body = (&mut from_client).take(length);
            match f {
                Fault::None => {
                    to_server.write_all(&head)?;
                    std::io::copy(&mut body, &mut to_server)?;
                }
                Fault::Status500 => {
                    std::io::copy(&mut body, &mut std::io::sink())?;
                    let msg = "{\"message\": \"injected: the store failed\"}";
                    let mut c = client.try_clone()?;
                    write!(
                        c,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                        msg.len()
                    )?;
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
                Fault::Close => {
                    to_server.write_all(&head)?;
                    std::io::copy(&mut body.take(CUT), &mut to_server)?;
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
            }
        }
    }
}

/// Glance behind a proxy that fails the image data: answering 500 after
/// the body, then closing the connection after 8 MiB of it. Each time the
/// upload fails naming the step (`PUT …/file`) and what became of the
/// image (deleted), no image of that name is left, let alone `active`;
/// then the proxy passes everything and the same command succeeds, with
/// Glance's hash of the stored data equal to the file's.
#[test]
fn glance_failing_mid_upload_leaves_no_image_and_a_retry_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let img = w.join("data.raw");
    fs::write(&img, bytes(11, 48 << 20)).unwrap();
    let port = free_port();
    let state = w.join("glance");
    let _g = glance(&state, port);
    let proxy = FaultProxy::start(port);
    clouds_yaml(w, proxy.port, None);
    let upload = || cmd().args(["-q", "upload", "data.raw", "--cloud", "local", "--name", "faulty"]).current_dir(w).output().unwrap();
    for (fault, says) in [(Fault::Status500, "HTTP 500"), (Fault::Close, "PUT")] {
        proxy.set(fault);
        let o = upload();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{fault:?}: the upload reported success: {err}");
        assert!(err.contains("/file") && err.contains("PUT") && err.contains(says), "{fault:?}: the step is not named: {err}");
        assert!(err.contains("deleted the half-made image"), "{fault:?}: what became of the image: {err}");
        let imgs = get(port, "/v2/images?name=faulty");
        assert!(imgs["images"].as_array().unwrap().is_empty(), "{fault:?}: an image is left behind: {imgs}");
        eprintln!("{fault:?}: {}", err.trim());
    }
    proxy.set(Fault::None);
    let o = upload();
    assert!(o.status.success(), "the retry failed: {}", String::from_utf8_lossy(&o.stderr));
    let imgs = get(port, "/v2/images?name=faulty");
    let list = imgs["images"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{imgs}");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["os_hash_value"], sha512(&img), "Glance's hash of what it stored");
    assert_eq!(list[0]["size"], 48 << 20);
}
