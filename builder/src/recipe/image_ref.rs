//! Container image references (`nginx:1.22`, `example.com:5000/team/app:v1`)
//! as `docker tag` and `docker load` take them: the grammar of the
//! `distribution/reference` Go package that Docker, containerd and skopeo
//! share, with Docker's normalisation (`nginx` is
//! `docker.io/library/nginx:latest`). Digest references (`@sha256:…`) are
//! refused: an image being written has no digest yet.

/// A parsed, valid `[DOMAIN/]PATH[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io` unless the reference names a registry.
    domain: String,
    /// The repository path inside the registry (`library/nginx`).
    path: String,
    /// `latest` unless the reference names a tag.
    tag: String,
}

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Longest repository name (domain and path), as `distribution/reference`.
const NAME_MAX: usize = 255;

impl ImageRef {
    /// Parse a reference; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.contains('@') {
            return Err(format!("`{s}` names a digest: give a name and tag, like \"example.com/app:1.0\""));
        }
        let last = s.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match s[last..].find(':') {
            Some(i) => (&s[..last + i], &s[last + i + 1..]),
            None => (s, "latest"),
        };
        if !valid_tag(tag) {
            return Err(format!(
                "`{tag}` is not a valid tag: 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-` (in `{s}`)"
            ));
        }
        if name.is_empty() {
            return Err(format!("`{s}` has no repository name: give one, like \"app:1.0\""));
        }
        if name.len() > NAME_MAX {
            return Err(format!("the repository name in `{s}` is {} characters long, more than {NAME_MAX}", name.len()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                if !valid_domain(first) {
                    return Err(format!("`{first}` is not a valid registry host: a host name with an optional `:PORT` (in `{s}`)"));
                }
                (if first == LEGACY_DEFAULT_DOMAIN { DEFAULT_DOMAIN } else { first }, rest)
            }
            _ => (DEFAULT_DOMAIN, name),
        };
        for c in path.split('/') {
            if !valid_component(c) {
                return Err(format!(
                    "`{c}` is not a valid repository name component: lower-case letters and digits, with `.`, `_`, `__` or dashes between them (in `{s}`)"
                ));
            }
        }
        if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{path}` looks like an image ID (64 hex digits): Docker refuses it as a repository name"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        Ok(ImageRef { domain: domain.to_string(), path, tag: tag.to_string() })
    }

    /// The tag alone (`1.22`): the OCI layout's `org.opencontainers.image.ref.name`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The fully qualified reference (`docker.io/library/nginx:1.22`), as
    /// containerd stores names (`io.containerd.image.name`).
    pub fn normalized(&self) -> String {
        format!("{}/{}:{}", self.domain, self.path, self.tag)
    }

    /// The short form Docker shows (`nginx:1.22`, `example.com/app:1`), as
    /// `docker save` writes `RepoTags`.
    pub fn familiar(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.normalized();
        }
        let path = self.path.strip_prefix("library/").filter(|p| !p.contains('/')).unwrap_or(&self.path);
        format!("{path}:{}", self.tag)
    }
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (1..=128).contains(&t.len()) && word(t.as_bytes()[0]) && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A host name of `[a-zA-Z0-9-]` labels (no dash at either end), with an
/// optional `:PORT`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label =
        |l: &str| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_as_docker_does() {
        for (s, normalized, familiar, tag) in [
            ("nginx", "docker.io/library/nginx:latest", "nginx:latest", "latest"),
            ("nginx:1.22", "docker.io/library/nginx:1.22", "nginx:1.22", "1.22"),
            ("docker.io/library/nginx:1.22", "docker.io/library/nginx:1.22", "nginx:1.22", "1.22"),
            ("index.docker.io/team/app", "docker.io/team/app:latest", "team/app:latest", "latest"),
            ("team/app:v1_2-3", "docker.io/team/app:v1_2-3", "team/app:v1_2-3", "v1_2-3"),
            ("localhost/app", "localhost/app:latest", "localhost/app:latest", "latest"),
            ("example.com:5000/a/b-c__d.e:V1", "example.com:5000/a/b-c__d.e:V1", "example.com:5000/a/b-c__d.e:V1", "V1"),
            ("my-appliance:latest", "docker.io/library/my-appliance:latest", "my-appliance:latest", "latest"),
        ] {
            let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((r.normalized().as_str(), r.familiar().as_str(), r.tag()), (normalized, familiar, tag), "{s}");
        }
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        for (s, why) in [
            ("Nginx:1", "component"),
            ("nginx:", "tag"),
            ("nginx:-x", "tag"),
            ("nginx:a/b", "registry host"),
            ("nginx@sha256:abcd", "digest"),
            ("a..b:1", "component"),
            ("a-:1", "component"),
            ("", "no repository"),
            (":1", "no repository"),
            ("ex_ample.com/app", "registry host"),
            ("example.com:x/app", "registry host"),
            ("team//app", "component"),
            (&"a".repeat(256), "255"),
            (&format!("{}:1", "ab".repeat(32)), "image ID"),
            (&format!("app:{}", "t".repeat(129)), "tag"),
        ] {
            let e = ImageRef::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
