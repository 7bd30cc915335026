//! `build-image upload`: an image into OpenStack Glance (v2), after
//! authenticating with Keystone v3 (password, application credential or
//! token) or with no auth at all (`auth_type: none` and an endpoint).
//!
//! The upload: create the image record (`POST /v2/images`, with the disk
//! and boot properties) → stream the file (`PUT /v2/images/ID/file`,
//! hashing it with sha512 on the way) → poll until `active` → compare
//! Glance's `os_hash_value` and `size` with ours. If any step after the
//! create fails, the half-made image is deleted, and the message says so.
//!
//! Credentials never reach a message, a log or the terminal: they live in
//! [`config::Secret`], whose `Debug` is `<redacted>`, and errors name only
//! the auth URL and the user.

pub mod config;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

pub use config::Cloud;

/// Errors of `upload`.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{0}")]
    Config(String),
    #[error("authentication at {auth_url} as {user} failed: {why}")]
    Auth { auth_url: String, user: String, why: String },
    #[error("{method} {url}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Http { method: &'static str, url: String, status: u16, detail: String },
    #[error("{method} {url}: {why}")]
    Transport { method: &'static str, url: String, why: String },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}; {cleanup}")]
    Upload { what: String, cleanup: String },
}

/// What to upload and how to call it.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Cloud name in clouds.yaml (default: `OS_CLOUD`, the `OS_*`
    /// variables, or the only cloud).
    pub cloud: Option<String>,
    /// Image name (default: the file name without its extension).
    pub name: Option<String>,
    /// Extra properties; they override the computed ones.
    pub properties: Vec<(String, String)>,
    /// `public`, `private`, `shared` or `community`.
    pub visibility: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
    /// How long to wait for `active` after the upload.
    pub timeout: Option<Duration>,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadReport {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub sha512: String,
    pub image_url: String,
    pub properties: BTreeMap<String, Value>,
}

/// Strip userinfo and query from a URL before it goes into a message.
fn shown(url: &str) -> String {
    let mut s = url.to_string();
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            s = format!("{}{}", &s[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    if let Some(q) = s.find('?') {
        s.truncate(q);
    }
    s
}

/// The first line of an error body, made short (OpenStack puts a JSON or
/// HTML message there; it never echoes credentials back).
fn detail(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for p in ["/error/message", "/message", "/badRequest/message", "/detail"] {
            if let Some(m) = v.pointer(p).and_then(Value::as_str) {
                return m.lines().next().unwrap_or("").chars().take(300).collect();
            }
        }
    }
    let text: String = body
        .split(['<', '>'])
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    text.chars().take(300).collect()
}

/// A session: an HTTP agent, a token (if any) and the image endpoint.
pub struct Session {
    agent: ureq::Agent,
    token: Option<String>,
    /// `…/v2` of the image service.
    image_url: String,
    /// For auth_type none: headers that give the request a role.
    noauth: bool,
}

fn agent(cloud: &Cloud) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(600)))
        .user_agent(concat!("build-image/", env!("CARGO_PKG_VERSION")));
    if cloud.verify == Some(false) {
        cfg = cfg.tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build());
    }
    cfg.build().into()
}

fn v2(url: &str) -> String {
    let u = url.trim_end_matches('/');
    let u = u.strip_suffix("/v2").unwrap_or(u);
    format!("{u}/v2")
}

impl Session {
    /// Authenticate (or not) and find the image endpoint.
    pub fn open(cloud: &Cloud) -> Result<Session, CloudError> {
        let agent = agent(cloud);
        let kind = cloud.kind()?;
        if kind == "none" {
            let ep = cloud.image_endpoint_override.clone().or(cloud.auth.endpoint.clone()).ok_or_else(|| {
                CloudError::Config(format!("{}: auth_type none needs `image_endpoint_override` or `auth.endpoint`", cloud.source))
            })?;
            return Ok(Session { agent, token: None, image_url: v2(&ep), noauth: true });
        }
        let (token, catalog) = keystone_auth(&agent, cloud, kind)?;
        let image_url = match &cloud.image_endpoint_override {
            Some(o) => v2(o),
            None => v2(&pick_endpoint(&catalog, cloud)?),
        };
        Ok(Session { agent, token: Some(token), image_url, noauth: false })
    }

    fn req(&self, method: &'static str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut r = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            _ => unreachable!("only methods with a body"),
        };
        if let Some(t) = &self.token {
            r = r.header("X-Auth-Token", t);
        }
        if self.noauth {
            r = r.header("X-Roles", "admin");
        }
        r
    }

    fn req0(&self, method: &'static str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut r = match method {
            "GET" => self.agent.get(url),
            "DELETE" => self.agent.delete(url),
            _ => unreachable!("only methods without a body"),
        };
        if let Some(t) = &self.token {
            r = r.header("X-Auth-Token", t);
        }
        if self.noauth {
            r = r.header("X-Roles", "admin");
        }
        r
    }

    pub fn image_url(&self) -> &str {
        &self.image_url
    }

    /// `GET /v2/images/ID`.
    pub fn get_image(&self, id: &str) -> Result<Value, CloudError> {
        let url = format!("{}/images/{id}", self.image_url);
        let resp = self.req0("GET", &url).call();
        json_response("GET", &url, resp, 200)
    }

    /// `DELETE /v2/images/ID`.
    pub fn delete_image(&self, id: &str) -> Result<(), CloudError> {
        let url = format!("{}/images/{id}", self.image_url);
        let resp = self.req0("DELETE", &url).call();
        json_response("DELETE", &url, resp, 204).map(|_| ())
    }

    /// `GET /v2/images?name=NAME`: the images of that name.
    pub fn find_images(&self, name: &str) -> Result<Vec<Value>, CloudError> {
        let url = format!("{}/images", self.image_url);
        let resp = self.req0("GET", &url).query("name", name).call();
        let v = json_response("GET", &url, resp, 200)?;
        Ok(v["images"].as_array().cloned().unwrap_or_default())
    }
}

fn json_response(
    method: &'static str,
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    want: u16,
) -> Result<Value, CloudError> {
    let mut resp = resp.map_err(|e| CloudError::Transport { method, url: shown(url), why: e.to_string() })?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if status != want && !(want == 200 && status == 201) {
        return Err(CloudError::Http { method, url: shown(url), status, detail: detail(&body) });
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body).map_err(|e| CloudError::Transport { method, url: shown(url), why: format!("the answer is not JSON: {e}") })
}

fn domain(name: &Option<String>, id: &Option<String>, fallback_name: &Option<String>, fallback_id: &Option<String>) -> Value {
    match (id.as_ref().or(fallback_id.as_ref()), name.as_ref().or(fallback_name.as_ref())) {
        (Some(id), _) => json!({"id": id}),
        (None, Some(n)) => json!({"name": n}),
        (None, None) => json!({"id": "default"}),
    }
}

/// Keystone v3 `POST /auth/tokens`: the token and the service catalog.
fn keystone_auth(agent: &ureq::Agent, cloud: &Cloud, kind: &str) -> Result<(String, Value), CloudError> {
    let a = &cloud.auth;
    let base = a
        .auth_url
        .clone()
        .ok_or_else(|| CloudError::Config(format!("{}: no auth_url (or set auth_type: none with an endpoint)", cloud.source)))?;
    let base = base.trim_end_matches('/');
    let v3 = if base.ends_with("/v3") { base.to_string() } else { format!("{base}/v3") };
    let url = format!("{v3}/auth/tokens");
    let user_shown = cloud.user_shown();
    let auth_err = |why: String| CloudError::Auth { auth_url: shown(&v3), user: user_shown.clone(), why };
    let user = || {
        let mut u = serde_json::Map::new();
        if let Some(id) = &a.user_id {
            u.insert("id".into(), json!(id));
        } else if let Some(n) = &a.username {
            u.insert("name".into(), json!(n));
            u.insert("domain".into(), domain(&a.user_domain_name, &a.user_domain_id, &a.domain_name, &a.domain_id));
        }
        u
    };
    let project = a.project_name.clone().or(a.tenant.clone());
    let scope = if let Some(id) = &a.project_id {
        Some(json!({"project": {"id": id}}))
    } else {
        project.map(|p| {
            json!({"project": {"name": p, "domain": domain(&a.project_domain_name, &a.project_domain_id, &a.domain_name, &a.domain_id)}})
        })
    };
    let mut body = match kind {
        "password" => {
            let pw = a.password.as_ref().ok_or_else(|| auth_err("no password given".into()))?;
            let mut u = user();
            if u.is_empty() {
                return Err(auth_err("no username or user_id given".into()));
            }
            u.insert("password".into(), json!(pw.expose()));
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": u}}}})
        }
        "application_credential" => {
            let secret =
                a.application_credential_secret.as_ref().ok_or_else(|| auth_err("no application_credential_secret given".into()))?;
            let mut c = serde_json::Map::new();
            if let Some(id) = &a.application_credential_id {
                c.insert("id".into(), json!(id));
            } else if let Some(n) = &a.application_credential_name {
                c.insert("name".into(), json!(n));
                c.insert("user".into(), Value::Object(user()));
            } else {
                return Err(auth_err("no application_credential_id or _name given".into()));
            }
            c.insert("secret".into(), json!(secret.expose()));
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": c}}})
        }
        _ => {
            let t = a.token.as_ref().ok_or_else(|| auth_err("no token given".into()))?;
            json!({"auth": {"identity": {"methods": ["token"], "token": {"id": t.expose()}}}})
        }
    };
    // Application credentials carry their own scope.
    if kind != "application_credential" {
        if let Some(s) = scope {
            body["auth"]["scope"] = s;
        }
    }
    let resp = agent.post(&url).send_json(&body);
    drop(body);
    let mut resp = resp.map_err(|e| auth_err(e.to_string()))?;
    let status = resp.status().as_u16();
    let token = resp.headers().get("X-Subject-Token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
    if status != 201 && status != 200 {
        let d = detail(&text);
        let why = if status == 401 { format!("HTTP 401, wrong credentials ({d})") } else { format!("HTTP {status} ({d})") };
        return Err(auth_err(why));
    }
    let token = token.ok_or_else(|| auth_err("no X-Subject-Token in the answer".into()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| auth_err(format!("the answer is not JSON: {e}")))?;
    Ok((token, v["token"]["catalog"].clone()))
}

fn pick_endpoint(catalog: &Value, cloud: &Cloud) -> Result<String, CloudError> {
    let iface = cloud.interface.as_deref().unwrap_or("public").trim_end_matches("URL");
    let region = cloud.region_name.as_deref();
    let services = catalog.as_array().cloned().unwrap_or_default();
    for s in &services {
        if s["type"] != "image" {
            continue;
        }
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let r = e["region_id"].as_str().or(e["region"].as_str());
            if e["interface"] == iface && (region.is_none() || r == region) {
                if let Some(u) = e["url"].as_str() {
                    return Ok(u.to_string());
                }
            }
        }
    }
    Err(CloudError::Config(format!(
        "{}: the catalog has no {iface} image endpoint{} (set image_endpoint_override?)",
        cloud.source,
        region.map(|r| format!(" in region {r}")).unwrap_or_default()
    )))
}

/// Glance `disk_format` from the file extension.
pub fn disk_format(path: &Path) -> Result<&'static str, CloudError> {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "raw" | "img" => Ok("raw"),
        "qcow2" => Ok("qcow2"),
        "vmdk" => Ok("vmdk"),
        "vhd" => Ok("vhd"),
        other => Err(CloudError::Config(format!(
            "{}: cannot tell the disk format from the extension `{other}` (use .raw, .qcow2, .vmdk or .vhd)",
            path.display()
        ))),
    }
}

/// The manifest next to an image: `out/NAME.raw` → `out/NAME.manifest.json`.
pub fn manifest_path(image: &Path) -> PathBuf {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    image.with_file_name(format!("{stem}.manifest.json"))
}

const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// Boot properties from the manifest: firmware, buses, min_disk.
pub fn boot_properties(manifest: &Value) -> BTreeMap<String, Value> {
    let mut p = BTreeMap::new();
    let disk = &manifest["disk"];
    let parts = disk["partitions"].as_array().cloned().unwrap_or_default();
    let esp = parts.iter().any(|q| {
        ["type_guid", "type", "type_uuid"].iter().any(|k| q[*k].as_str().is_some_and(|s| s.eq_ignore_ascii_case(ESP_GUID) || s == "esp"))
    });
    p.insert("hw_firmware_type".into(), json!(if esp { "uefi" } else { "bios" }));
    p.insert("hw_disk_bus".into(), json!("virtio"));
    p.insert("hw_vif_model".into(), json!("virtio"));
    p.insert("os_type".into(), json!("linux"));
    if let Some(size) = disk["disk_size"].as_u64() {
        p.insert("min_disk".into(), json!(size.div_ceil(1 << 30)));
    }
    p
}

/// Reads a file, hashing (sha512) and counting what goes by.
struct Hashing<'a> {
    file: File,
    hash: Sha512,
    done: u64,
    bar: &'a ProgressBar,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hash.update(&buf[..n]);
        self.done += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Upload `image` to Glance.
pub fn upload(image: &Path, opts: &UploadOptions) -> Result<UploadReport, CloudError> {
    let fmt = disk_format(image)?;
    let file = File::open(image).map_err(|source| CloudError::Io { path: image.into(), source })?;
    let size = file.metadata().map_err(|source| CloudError::Io { path: image.into(), source })?.len();
    let name =
        opts.name.clone().unwrap_or_else(|| image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into()));

    let mut props: BTreeMap<String, Value> = BTreeMap::new();
    let mpath = manifest_path(image);
    match std::fs::read_to_string(&mpath) {
        Ok(text) => {
            let m: Value = serde_json::from_str(&text).map_err(|e| CloudError::Config(format!("{}: {e}", mpath.display())))?;
            props.extend(boot_properties(&m));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fmt == "raw" {
                props.insert("min_disk".into(), json!(size.div_ceil(1 << 30)));
            }
        }
        Err(source) => return Err(CloudError::Io { path: mpath, source }),
    }
    props.insert("disk_format".into(), json!(fmt));
    props.insert("container_format".into(), json!("bare"));
    props.insert("name".into(), json!(name));
    if let Some(v) = &opts.visibility {
        props.insert("visibility".into(), json!(v));
    }
    for (k, v) in &opts.properties {
        let val = match k.as_str() {
            "min_disk" | "min_ram" => v.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(v)),
            "protected" | "os_hidden" => json!(v == "true"),
            _ => json!(v),
        };
        props.insert(k.clone(), val);
    }

    let cloud = config::resolve(opts.cloud.as_deref())?;
    let s = Session::open(&cloud)?;
    let url = format!("{}/images", s.image_url);
    let created = json_response("POST", &url, s.req("POST", &url).send_json(&props), 201)?;
    let id = created["id"].as_str().map(str::to_string).ok_or_else(|| CloudError::Transport {
        method: "POST",
        url: shown(&url),
        why: "the answer has no image id".into(),
    })?;

    let result = put_and_check(&s, &id, file, size, opts);
    match result {
        Ok((sha512, image)) => {
            let props = image.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
            Ok(UploadReport { id, name, size, sha512, image_url: s.image_url.clone(), properties: props })
        }
        Err(e) => {
            let cleanup = match s.delete_image(&id) {
                Ok(()) => format!("deleted the half-made image {id}"),
                Err(d) => format!("could not delete the half-made image {id} ({d}): delete it by hand"),
            };
            Err(CloudError::Upload { what: e.to_string(), cleanup })
        }
    }
}

fn put_and_check(s: &Session, id: &str, file: File, size: u64, opts: &UploadOptions) -> Result<(String, Value), CloudError> {
    let url = format!("{}/images/{id}/file", s.image_url);
    let bar = if opts.progress {
        let b = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut reader = Hashing { file, hash: Sha512::new(), done: 0, bar: &bar };
    let resp = s
        .req("PUT", &url)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", size.to_string())
        .send(ureq::SendBody::from_reader(&mut reader));
    bar.finish_and_clear();
    json_response("PUT", &url, resp, 204)?;
    if reader.done != size {
        return Err(CloudError::Transport { method: "PUT", url: shown(&url), why: format!("sent {} of {size} bytes", reader.done) });
    }
    let ours = hex::encode(reader.hash.finalize());

    let deadline = Instant::now() + opts.timeout.unwrap_or(Duration::from_secs(1800));
    let mut wait = Duration::from_millis(200);
    let image = loop {
        let v = s.get_image(id)?;
        match v["status"].as_str().unwrap_or("") {
            "active" => break v,
            "killed" | "deleted" | "pending_delete" => {
                return Err(CloudError::Config(format!(
                    "Glance marked image {id} `{}` after the upload",
                    v["status"].as_str().unwrap_or("")
                )))
            }
            other if Instant::now() > deadline => {
                return Err(CloudError::Config(format!("image {id} is still `{other}` after waiting; giving up")))
            }
            _ => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    let their_size = image["size"].as_u64();
    if their_size != Some(size) {
        return Err(CloudError::Config(format!("Glance stored {their_size:?} bytes for image {id}, the file has {size}")));
    }
    match (image["os_hash_algo"].as_str(), image["os_hash_value"].as_str()) {
        (Some("sha512"), Some(h)) if h != ours => {
            return Err(CloudError::Config(format!("Glance's sha512 of image {id} is {h}, the file's is {ours}")));
        }
        _ => {}
    }
    Ok((ours, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo_and_query() {
        assert_eq!(shown("https://u:p@h:5000/v3?x=1"), "https://h:5000/v3");
        assert_eq!(shown("http://h/v2"), "http://h/v2");
        assert_eq!(v2("http://h:9292/"), "http://h:9292/v2");
        assert_eq!(v2("http://h:9292/v2/"), "http://h:9292/v2");
    }

    #[test]
    fn boot_properties_from_a_manifest() {
        let m = json!({"disk": {"disk_size": 1153433600u64, "partitions": [{"type_guid": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}]}});
        let p = boot_properties(&m);
        assert_eq!(p["hw_firmware_type"], "uefi");
        assert_eq!(p["min_disk"], 2);
        assert_eq!(boot_properties(&json!({"disk": {"partitions": []}}))["hw_firmware_type"], "bios");
    }

    #[test]
    fn error_bodies_shrink_to_one_line() {
        assert_eq!(
            detail(r#"{"error": {"message": "The request you have made requires authentication.", "code": 401}}"#),
            "The request you have made requires authentication."
        );
        assert_eq!(detail("<html><body><h1>403 Forbidden</h1>\n nope</body></html>"), "403 Forbidden nope");
    }
}
