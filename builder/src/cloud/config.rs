//! Cloud settings the way the `openstack` CLI finds them: a named cloud in
//! `clouds.yaml` (`OS_CLIENT_CONFIG_FILE`, else the first of `./`,
//! `~/.config/openstack/`, `/etc/openstack/`), or the `OS_*` environment
//! variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::CloudError;

/// One cloud's settings. `Debug` never shows secrets.
#[derive(Clone, Default, Deserialize)]
pub struct Cloud {
    #[serde(default)]
    pub auth_type: Option<String>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub region_name: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub image_endpoint_override: Option<String>,
    /// `false` turns off TLS certificate checks.
    #[serde(default)]
    pub verify: Option<bool>,
    /// Where the settings came from, for messages.
    #[serde(skip)]
    pub source: String,
}

/// The `auth:` block. Secrets are `Secret`, which neither prints nor logs.
#[derive(Clone, Default, Deserialize)]
pub struct Auth {
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<Secret>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    #[serde(alias = "tenant_name")]
    pub tenant: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_secret: Option<Secret>,
    pub token: Option<Secret>,
    /// `auth_type: none`: the service's URL.
    pub endpoint: Option<String>,
}

/// A credential: readable by the code that sends it, never shown.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud")
            .field("auth_type", &self.auth_type)
            .field("auth_url", &self.auth.auth_url)
            .field("user", &self.user_shown())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, Cloud>,
}

impl Cloud {
    /// The user as messages name it (never a secret).
    pub fn user_shown(&self) -> String {
        let a = &self.auth;
        if let Some(u) = a.username.as_ref().or(a.user_id.as_ref()) {
            return u.clone();
        }
        if let Some(id) = a.application_credential_id.as_ref().or(a.application_credential_name.as_ref()) {
            return format!("application credential {id}");
        }
        if a.token.is_some() {
            return "a token".into();
        }
        "(no user)".into()
    }

    /// The normalised auth type: `password`, `application_credential`,
    /// `token` or `none`.
    pub fn kind(&self) -> Result<&'static str, CloudError> {
        let t = self.auth_type.as_deref().unwrap_or("");
        Ok(match t {
            "" if self.auth.application_credential_secret.is_some() => "application_credential",
            "" if self.auth.password.is_some() => "password",
            "" if self.auth.token.is_some() => "token",
            "" if self.auth.auth_url.is_none() && (self.auth.endpoint.is_some() || self.image_endpoint_override.is_some()) => "none",
            "" | "password" | "v3password" => "password",
            "v3applicationcredential" | "application_credential" => "application_credential",
            "token" | "v3token" => "token",
            "none" | "noauth" => "none",
            other => {
                return Err(CloudError::Config(format!(
                    "{}: auth_type `{other}` is not supported (use password, v3applicationcredential, token or none)",
                    self.source
                )))
            }
        })
    }
}

/// The clouds.yaml in use, if any.
pub fn clouds_yaml() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("OS_CLIENT_CONFIG_FILE") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(Path::new(&h).join(".config/openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs.into_iter().flat_map(|d| [d.join("clouds.yaml"), d.join("clouds.yml")]).find(|p| p.is_file())
}

/// The cloud from the `OS_*` variables, if they name one.
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Option<Cloud> {
    let any = ["OS_AUTH_URL", "OS_AUTH_TYPE", "OS_ENDPOINT", "OS_IMAGE_ENDPOINT_OVERRIDE", "OS_TOKEN"];
    if !any.iter().any(|k| get(k).is_some()) {
        return None;
    }
    let s = |k: &str| get(k);
    let secret = |k: &str| get(k).map(Secret::new);
    Some(Cloud {
        auth_type: s("OS_AUTH_TYPE"),
        auth: Auth {
            auth_url: s("OS_AUTH_URL"),
            username: s("OS_USERNAME"),
            user_id: s("OS_USER_ID"),
            password: secret("OS_PASSWORD"),
            project_name: s("OS_PROJECT_NAME").or_else(|| s("OS_TENANT_NAME")),
            project_id: s("OS_PROJECT_ID").or_else(|| s("OS_TENANT_ID")),
            tenant: None,
            user_domain_name: s("OS_USER_DOMAIN_NAME"),
            user_domain_id: s("OS_USER_DOMAIN_ID"),
            project_domain_name: s("OS_PROJECT_DOMAIN_NAME"),
            project_domain_id: s("OS_PROJECT_DOMAIN_ID"),
            domain_name: s("OS_DOMAIN_NAME"),
            domain_id: s("OS_DOMAIN_ID"),
            application_credential_id: s("OS_APPLICATION_CREDENTIAL_ID"),
            application_credential_name: s("OS_APPLICATION_CREDENTIAL_NAME"),
            application_credential_secret: secret("OS_APPLICATION_CREDENTIAL_SECRET"),
            token: secret("OS_TOKEN"),
            endpoint: s("OS_ENDPOINT"),
        },
        region_name: s("OS_REGION_NAME"),
        interface: s("OS_INTERFACE"),
        image_endpoint_override: s("OS_IMAGE_ENDPOINT_OVERRIDE"),
        verify: s("OS_INSECURE").map(|v| !matches!(v.as_str(), "1" | "true" | "True" | "yes")),
        source: "the OS_* environment variables".into(),
    })
}

/// Find the cloud to use: `name` (or `OS_CLOUD`) in clouds.yaml; else the
/// `OS_*` variables; else the only cloud in clouds.yaml.
pub fn resolve(name: Option<&str>) -> Result<Cloud, CloudError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let name = name.map(str::to_string).or_else(|| env("OS_CLOUD"));
    if name.as_deref() == Some("envvars") {
        return from_env(&env)
            .ok_or_else(|| CloudError::Config("cloud `envvars` asked for, but no OS_AUTH_URL or OS_ENDPOINT is set".into()));
    }
    if name.is_none() {
        if let Some(c) = from_env(&env) {
            return Ok(c);
        }
    }
    let Some(path) = clouds_yaml() else {
        return Err(CloudError::Config(
            "no cloud settings: write a clouds.yaml (./, ~/.config/openstack/ or /etc/openstack/, or OS_CLIENT_CONFIG_FILE) or set OS_AUTH_URL and friends"
                .into(),
        ));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| CloudError::Config(format!("reading {}: {e}", path.display())))?;
    load(&text, &path, name.as_deref())
}

/// Pick cloud `name` out of clouds.yaml text.
pub fn load(text: &str, path: &Path, name: Option<&str>) -> Result<Cloud, CloudError> {
    // serde_yaml's messages quote no values, so secrets stay out of them.
    let file: CloudsFile = serde_yaml::from_str(text).map_err(|e| CloudError::Config(format!("{}: {e}", path.display())))?;
    let names: Vec<&str> = file.clouds.keys().map(String::as_str).collect();
    let pick = match name {
        Some(n) => n.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return Err(CloudError::Config(format!(
                "{} has clouds {}: choose one with --cloud or OS_CLOUD",
                path.display(),
                names.join(", ")
            )))
        }
    };
    let mut cloud = file
        .clouds
        .get(&pick)
        .cloned()
        .ok_or_else(|| CloudError::Config(format!("no cloud `{pick}` in {} (it has: {})", path.display(), names.join(", "))))?;
    cloud.source = format!("cloud `{pick}` in {}", path.display());
    Ok(cloud)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
clouds:
  lab:
    auth:
      auth_url: https://keystone.example:5000/v3
      username: alice
      password: "hunter2"
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
  local:
    auth_type: none
    image_endpoint_override: http://127.0.0.1:9292
"#;

    #[test]
    fn picks_a_cloud_and_hides_secrets() {
        let c = load(YAML, Path::new("clouds.yaml"), Some("lab")).unwrap();
        assert_eq!(c.kind().unwrap(), "password");
        assert_eq!(c.user_shown(), "alice");
        let shown = format!("{c:?} {:?}", c.auth.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        let n = load(YAML, Path::new("clouds.yaml"), Some("local")).unwrap();
        assert_eq!(n.kind().unwrap(), "none");
        let e = load(YAML, Path::new("clouds.yaml"), None).unwrap_err().to_string();
        assert!(e.contains("lab, local"), "{e}");
        let e = load(YAML, Path::new("clouds.yaml"), Some("nope")).unwrap_err().to_string();
        assert!(e.contains("no cloud `nope`"), "{e}");
    }

    #[test]
    fn env_vars_make_a_cloud() {
        let vars: BTreeMap<&str, &str> =
            [("OS_AUTH_URL", "http://k/v3"), ("OS_USERNAME", "bob"), ("OS_PASSWORD", "pw"), ("OS_PROJECT_NAME", "p")].into();
        let c = from_env(&|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.kind().unwrap(), "password");
        assert_eq!(c.auth.project_name.as_deref(), Some("p"));
        assert!(from_env(&|_| None).is_none());
    }
}
