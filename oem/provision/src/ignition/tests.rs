use super::*;

const SEED: &str = r#"{"ignition":{"version":"2.0.0"},"storage":{"filesystems":[{"mount":{"device":"/dev/disk/by-label/ROOT","format":"btrfs","create":{"force":true,"options":["--label=ROOT"]}}}],"files":[{"filesystem":"root","path":"/etc/systemd/timesyncd.conf","mode":420,"contents":{"source":"data:,%5BTime%5D%0ANTP=0.ru.pool.ntp.org%201.ru.pool.ntp.org%0A"}}]},"systemd":{"units":[{"name":"sshd.socket","command":"restart","runtime":true,"contents":"[Socket]\nListenStream=2345\nFreeBind=true\nAccept=yes"}]},"networkd":{"units":[{"name":"iface-eth0.network","contents":"[Match]\nName=eth0\n\n[Network]\nDNS=188.93.16.19\nDNS=188.93.17.19\nDNS=109.234.159.91\nAddress=10.11.12.13/24\nGateway=10.11.12.1"}]}}"#;

fn errors(data: &str) -> Vec<(String, String)> {
    match check(data.as_bytes()) {
        Ok(p) => panic!("accepted: {data}\n{:?}", p.warnings),
        Err(e) => e.errors().map(|d| (d.path.clone(), d.message.clone())).collect(),
    }
}

fn has_error(data: &str, path: &str, needle: &str) {
    let errs = errors(data);
    assert!(errs.iter().any(|(p, m)| p == path && m.contains(needle)), "no error at {path} containing {needle:?}: {errs:?}");
}

#[test]
fn seed_example_translates_with_its_warnings() {
    let p = check(SEED.as_bytes()).unwrap();
    let warned: Vec<&str> = p.warnings.iter().map(|w| w.path.as_str()).collect();
    // cloud-config's keys in a 2.x unit, and the root's mkfs options (the
    // root is kept, never formatted, so they are moot).
    assert_eq!(warned, ["systemd.units[0].command", "systemd.units[0].runtime", "storage.filesystems[0].options"], "{:?}", p.warnings);
    assert!(p.warnings.iter().all(|w| w.severity == Severity::Warning));
    assert!(p.warnings[..2].iter().all(|w| w.message.contains("unknown key")));
    let c = &p.config;
    assert_eq!(c.spec, Some(Spec { major: 2, minor: 0, experimental: false }));
    let fs = &c.storage.filesystems[0];
    assert_eq!(fs.device, "/dev/disk/by-label/ROOT");
    assert_eq!(fs.format.as_deref(), Some("btrfs"));
    assert_eq!(fs.wipe_filesystem, Some(true));
    assert_eq!(fs.options, ["--label=ROOT"]);
    // The file, then the networkd unit as a file.
    assert_eq!(c.storage.files.len(), 2);
    let f = &c.storage.files[0];
    assert_eq!((f.node.path.as_str(), f.mode, f.node.overwrite), ("/etc/systemd/timesyncd.conf", Some(420), Some(true)));
    assert_eq!(decode_resource(&f.contents).unwrap(), b"[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org\n");
    let n = &c.storage.files[1];
    assert_eq!(n.node.path, "/etc/systemd/network/iface-eth0.network");
    assert_eq!(n.node.origin, "networkd.units[0]");
    let body = String::from_utf8(decode_resource(&n.contents).unwrap()).unwrap();
    assert!(body.starts_with("[Match]\nName=eth0\n") && body.ends_with("Gateway=10.11.12.1"));
    let u = &c.systemd.units[0];
    assert_eq!((u.name.as_str(), u.enabled, u.mask), ("sshd.socket", None, None));
    assert!(u.contents.as_deref().unwrap().contains("ListenStream=2345"));
}

#[test]
fn seed_example_applies() {
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        eprintln!("skipped: needs root (chown)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = check(SEED.as_bytes()).unwrap();
    let r = apply(t.path(), &p.config, &ApplyOptions { day: 1 }).unwrap();
    let got = std::fs::read(t.path().join("etc/systemd/timesyncd.conf")).unwrap();
    assert_eq!(got, b"[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org\n");
    assert!(t.path().join("etc/systemd/network/iface-eth0.network").is_file());
    assert!(std::fs::read_to_string(t.path().join("etc/systemd/system/sshd.socket")).unwrap().starts_with("[Socket]"));
    let actions: Vec<&str> = r.steps.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(actions, ["file-written", "file-written", "unit-written"]);
    assert_eq!(r.to_json()["steps"][0]["from"], "storage.files[0]");
    // Nothing left behind but what the config names.
    let mut names = Vec::new();
    for e in std::fs::read_dir(t.path().join("etc/systemd")).unwrap() {
        names.push(e.unwrap().file_name().into_string().unwrap());
    }
    names.sort();
    assert_eq!(names, ["network", "system", "timesyncd.conf"]);
}

#[test]
fn versions() {
    for v in [
        "3.0.0",
        "3.1.0",
        "3.2.0",
        "3.3.0",
        "3.4.0",
        "3.4.0-experimental",
        "2.0.0",
        "2.1.0",
        "2.2.0",
        "2.3.0",
        "2.4.0",
        "2.4.1",
        "2.3.0-experimental",
    ] {
        let c = check(format!(r#"{{"ignition":{{"version":"{v}"}}}}"#).as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.config.version, v);
    }
    for v in ["3.5.0", "3.3.0-experimental", "1.0.0", "2.5.0", "3.3", "x", "03.3.0"] {
        has_error(&format!(r#"{{"ignition":{{"version":"{v}"}}}}"#), "ignition.version", "");
    }
    has_error(r#"{"ignition":{}}"#, "ignition.version", "missing");
    has_error(r#"{"ignition":{"version":3}}"#, "ignition.version", "string");
}

#[test]
fn invalid_json_reports_line_and_column() {
    let e = check(b"{\n  \"ignition\": {\"version\": \"3.3.0\"},\n  \"storage\": {,}\n}").unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.column), (Some(3), Some(15)), "{d}");
    assert!(d.to_string().contains("line 3, column 15"));
    assert!(check(b"").unwrap_err().diagnostics[0].message.contains("empty"));
    assert!(check(b"[1]").is_err());
}

#[test]
fn unknown_keys_warn_in_v3_too() {
    let p = parse(br#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","foo":1}]},"bar":{}}"#).unwrap();
    let paths: Vec<&str> = p.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["bar", "storage.files[0].foo"]);
    // kernelArguments only exists from 3.3.0 on.
    let p = parse(br#"{"ignition":{"version":"3.2.0"},"kernelArguments":{}}"#).unwrap();
    assert_eq!(p.warnings[0].path, "kernelArguments");
}

#[test]
fn error_paths() {
    let v = r#""ignition":{"version":"3.3.0"}"#;
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a"}},{{"path":"/b","contents":{{"source":"https://example.com/x"}}}}]}}}}"#),
        "storage.files[1].contents.source",
        "remote sources are not supported",
    );
    has_error(&format!(r#"{{{v},"storage":{{"files":[{{"path":"a"}}]}}}}"#), "storage.files[0].path", "not absolute");
    has_error(&format!(r#"{{{v},"storage":{{"files":[{{"path":"/a/../b"}}]}}}}"#), "storage.files[0].path", "\"/b\"");
    has_error(&format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","mode":"420"}}]}}}}"#), "storage.files[0].mode", "whole number");
    has_error(&format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","mode":9999}}]}}}}"#), "storage.files[0].mode", "illegal file mode");
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","overwrite":true}}]}}}}"#),
        "storage.files[0].overwrite",
        "source is unspecified",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a"}}],"directories":[{{"path":"/a"}}]}}}}"#),
        "storage.files[0]",
        "duplicate",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","user":{{"id":1,"name":"x"}}}}]}}}}"#),
        "storage.files[0].user",
        "both id and name",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","contents":{{"source":"data:,x","compression":"xz"}}}}]}}}}"#),
        "storage.files[0].contents.compression",
        "gzip",
    );
    has_error(
        &format!(
            r#"{{{v},"storage":{{"files":[{{"path":"/a","contents":{{"source":"data:,x","verification":{{"hash":"sha256-00"}}}}}}]}}}}"#
        ),
        "storage.files[0].contents.verification.hash",
        "incorrect size",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"files":[{{"path":"/a","contents":{{"source":"data:,%zz"}}}}]}}}}"#),
        "storage.files[0].contents.source",
        "percent",
    );
    has_error(&format!(r#"{{{v},"storage":{{"links":[{{"path":"/l"}}]}}}}"#), "storage.links[0].target", "required");
    has_error(
        &format!(r#"{{{v},"storage":{{"links":[{{"path":"/l","target":"/t"}}],"files":[{{"path":"/l/f"}}]}}}}"#),
        "storage.files[0]",
        "includes link",
    );
    has_error(&format!(r#"{{{v},"storage":{{"disks":[{{"device":"/dev/vdb"}}]}}}}"#), "storage.disks[0]", "not supported by this image");
    has_error(
        &format!(r#"{{{v},"storage":{{"raid":[{{"name":"r","level":"raid1","devices":["/dev/a"]}}]}}}}"#),
        "storage.raid[0]",
        "not supported by this image",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"luks":[{{"name":"l","device":"/dev/a"}}]}}}}"#),
        "storage.luks[0]",
        "not supported by this image",
    );
    has_error(&format!(r#"{{{v},"kernelArguments":{{"shouldExist":["quiet"]}}}}"#), "kernelArguments", "not supported");
    has_error(
        r#"{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"data:,{}"}]}}}"#,
        "ignition.config.merge[0]",
        "not supported",
    );
    has_error(
        r#"{"ignition":{"version":"3.3.0","security":{"tls":{"certificateAuthorities":[{"source":"data:,x"}]}}}}"#,
        "ignition.security.tls.certificateAuthorities[0]",
        "not supported",
    );
    has_error(
        &format!(r#"{{{v},"storage":{{"filesystems":[{{"device":"/dev/vdb","format":"ntfs"}}]}}}}"#),
        "storage.filesystems[0].format",
        "ext4",
    );
    has_error(&format!(r#"{{{v},"systemd":{{"units":[{{"name":"a.conf"}}]}}}}"#), "systemd.units[0].name", ".service");
    has_error(
        &format!(r#"{{{v},"systemd":{{"units":[{{"name":"a.service","dropins":[{{"name":"x.txt"}}]}}]}}}}"#),
        "systemd.units[0].dropins[0].name",
        ".conf",
    );
    has_error(
        &format!(r#"{{{v},"systemd":{{"units":[{{"name":"a.service","contents":"[Unit"}}]}}}}"#),
        "systemd.units[0].contents",
        "end of section",
    );
    has_error(&format!(r#"{{{v},"passwd":{{"users":[{{"name":"a"}},{{"name":"a"}}]}}}}"#), "passwd.users[1]", "duplicate");
    has_error(
        r#"{"ignition":{"version":"2.2.0"},"storage":{"files":[{"filesystem":"oem","path":"/a"}]}}"#,
        "storage.files[0].filesystem",
        "\"root\"",
    );
    has_error(
        r#"{"ignition":{"version":"2.2.0"},"networkd":{"units":[{"name":"a.txt","contents":"x"}]}}"#,
        "networkd.units[0].name",
        ".network",
    );
}

#[test]
fn content_forms() {
    let r = |src: &str, comp: Option<&str>, hash: Option<&str>| Resource {
        source: Some(src.into()),
        compression: comp.map(str::to_string),
        hash: hash.map(str::to_string),
        ..Default::default()
    };
    assert_eq!(decode_resource(&r("data:,a%20b", None, None)).unwrap(), b"a b");
    assert_eq!(decode_resource(&r("data:text/plain;charset=utf-8;base64,aGk=", Some(""), None)).unwrap(), b"hi");
    let gz = "data:;base64,H4sIAAAAAAAAA8tIzcnJVyjPL8pJAQCFEUoNCwAAAA==";
    assert_eq!(decode_resource(&r(gz, Some("gzip"), None)).unwrap(), b"hello world");
    let sha = "sha256-b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(decode_resource(&r(gz, Some("gzip"), Some(sha))).unwrap(), b"hello world");
    let bad = "sha256-a94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert!(matches!(decode_resource(&r(gz, Some("gzip"), Some(bad))), Err(ContentError::Hash(_))));
    assert!(matches!(decode_resource(&r("data:,x", Some("gzip"), None)), Err(ContentError::Gzip(_))));
    assert!(matches!(decode_resource(&r("s3://b/k", None, None)), Err(ContentError::Remote { .. })));
    assert!(matches!(decode_resource(&r("data:;base64,a", None, None)), Err(ContentError::DataUrl(_))));
    assert_eq!(decode_resource(&r("", None, None)).unwrap(), b"");
    let url = content::data_url(b"[Unit]\n100% ok,;\xff");
    assert_eq!(decode_resource(&r(&url, None, None)).unwrap(), b"[Unit]\n100% ok,;\xff");
}

#[test]
fn unit_syntax_as_go_systemd() {
    use content::unit_sections;
    assert_eq!(unit_sections("[Unit]\nA=b\n[Install]\nWantedBy=x\n").unwrap(), ["Unit", "Install"]);
    assert!(unit_sections("# c\n[Unit]\nA=b \\\n c\n").is_ok());
    assert!(unit_sections("[Unit] x\n").is_err());
    assert!(unit_sections("[Unit]\nNoEquals\nB=c\n").is_err());
    assert!(unit_sections("[Unit]\nNoEquals").is_err());
    assert!(unit_sections("garbage before\n[Unit]\nA=b").is_ok());
    assert!(unit_sections(&format!("[Unit]\nA={}\n", "x".repeat(3000))).is_err());
}

#[test]
fn enabled_without_install_warns() {
    let p = parse(br#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"a.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n"}]}}"#).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].message.contains("no install section"));
}

#[test]
fn v2_translation_rules() {
    let p = check(
        br#"{"ignition":{"version":"2.2.0"},"storage":{"files":[
            {"filesystem":"root","path":"/a","append":true,"contents":{"source":"data:,x"}},
            {"filesystem":"root","path":"/b//c/","overwrite":false}],
          "links":[{"filesystem":"root","path":"/l","target":"/a","hard":false}]},
          "systemd":{"units":[{"name":"a.service","enable":true,"mask":false},{"name":"b.service","enabled":false}]},
          "passwd":{"users":[{"name":"u","create":{"uid":1234,"groups":["sudo"]}}]}}"#,
    )
    .unwrap();
    let c = &p.config;
    let a = &c.storage.files[0];
    assert_eq!(a.node.overwrite, Some(false));
    assert_eq!(a.contents.source, None);
    assert_eq!(a.append[0].source.as_deref(), Some("data:,x"));
    assert_eq!(c.storage.files[1].node.path, "/b/c");
    assert_eq!(c.storage.files[1].contents.source.as_deref(), Some(""));
    assert_eq!(c.storage.links[0].hard, None);
    assert_eq!((c.systemd.units[0].enabled, c.systemd.units[0].mask), (Some(true), None));
    assert_eq!(c.systemd.units[1].enabled, Some(false));
    assert_eq!((c.passwd.users[0].uid, c.passwd.users[0].groups.clone()), (Some(1234), vec!["sudo".to_string()]));
    assert!(p.warnings.iter().any(|w| w.path == "passwd.users[0].create"));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = check(&data);
    }

    /// Structured garbage: valid JSON of the right shape with random values.
    #[test]
    fn structured_never_panics(
        version in proptest::sample::select(vec!["3.0.0", "3.3.0", "3.4.0", "2.0.0", "2.4.0"]),
        path in "[/a-z.]{0,12}",
        src in "(data:|https://|)[;,a-z0-9%=/+]{0,20}",
        mode in proptest::prelude::any::<i64>(),
        name in "[a-z@.]{0,12}",
        contents in "[\\[\\]a-zA-Z=\n#;\\\\ ]{0,40}",
    ) {
        let cfg = serde_json::json!({
            "ignition": {"version": version},
            "storage": {"files": [{"path": path, "filesystem": "root", "mode": mode, "contents": {"source": src, "compression": "gzip"}}],
                        "links": [{"path": path, "target": name, "hard": true}],
                        "filesystems": [{"device": path, "format": name, "label": contents}]},
            "systemd": {"units": [{"name": name, "contents": contents, "enabled": true, "dropins": [{"name": name, "contents": contents}]}]},
            "networkd": {"units": [{"name": name, "contents": contents}]},
            "passwd": {"users": [{"name": name, "uid": mode, "groups": [name, name]}], "groups": [{"name": name, "gid": mode}]}
        });
        let _ = check(cfg.to_string().as_bytes());
    }
}

/// Deliberate differences from Ignition 2.14 (see `apply`'s docs): the
/// setuid bit of a file survives, and an existing user whose home is
/// missing is not an error.
#[test]
fn setuid_kept_and_missing_home_fine() {
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        eprintln!("skipped: needs root (chown)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(
        t.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(t.path().join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let cfg = br#"{"ignition":{"version":"3.4.0"},"passwd":{"users":[{"name":"nobody","shell":"/bin/false"}]},
        "storage":{"files":[{"path":"/usr/bin/su2","mode":2541,"user":{"id":0},"contents":{"source":"data:,x"}}]}}"#;
    let p = check(cfg).unwrap();
    apply(t.path(), &p.config, &ApplyOptions { day: 1 }).unwrap();
    let m = std::fs::metadata(t.path().join("usr/bin/su2")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777, 0o4755);
    assert!(std::fs::read_to_string(t.path().join("etc/passwd"))
        .unwrap()
        .contains("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"));
}
