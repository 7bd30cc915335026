use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

/// The seed's first example as the blog post printed it. The copy in the
/// seed file lost its indentation with the HTML; `SEED_1_FLAT` is that copy.
const SEED_1: &str = r#"#cloud-config
# Set hostname
hostname: "node01"
# Set ntp servers
write_files:
  - path: /etc/systemd/timesyncd.conf
    content: |
      [Time]
      NTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org
coreos:
  units:
    # Configure static network on eth0 interface
    - name: iface-eth0.network
      runtime: true
      content: |
        [Match]
        Name=eth0

        [Network]
        DNS=188.93.16.19
        DNS=188.93.17.19
        DNS=109.234.159.91
        Address=10.11.12.13/24
        Gateway=10.11.12.1
    # Change standard SSH port
    - name: sshd.socket
      command: restart
      runtime: true
      content: |
        [Socket]
        ListenStream=2345
        FreeBind=true
        Accept=yes
"#;

/// Verbatim from the seed file (indentation lost).
const SEED_1_FLAT: &str = "#cloud-config
# Set hostname
hostname: \"node01\"
# Set ntp servers
write_files:
- path: /etc/systemd/timesyncd.conf
content: |
[Time]
NTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org
coreos:
units:
# Configure static network on eth0 interface
- name: iface-eth0.network
runtime: true
content: |
[Match]
Name=eth0
[Network]
DNS=188.93.16.19
DNS=188.93.17.19
DNS=109.234.159.91
Address=10.11.12.13/24
Gateway=10.11.12.1
# Change standard SSH port
- name: sshd.socket
command: restart
runtime: true
content: |
[Socket]
ListenStream=2345
FreeBind=true
Accept=yes
";

/// The seed's etcd2 cluster example (`/usr/share/oem/cloud-config.yml` on
/// node00), indented as in the blog post.
const SEED_2: &str = "coreos:
  etcd2:
    discovery: https://discovery.etcd.io/ec42cfef0450bd8a99090ee3d3294493
    advertise-client-urls: http://192.168.0.10:2379,http://192.168.0.10:4001
    initial-advertise-peer-urls: http://192.168.0.10:2380
    listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001
    listen-peer-urls: http://192.168.0.10:2380
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
";

fn parse_ok(doc: &str) -> CloudConfig {
    match parse(doc.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{doc}"),
    }
}

fn diags(c: &CloudConfig) -> Vec<String> {
    c.diagnostics.iter().map(|d| format!("{}: {}", d.path, d.message)).collect()
}

fn opts(run: &Path) -> ApplyOptions {
    ApplyOptions { run_dir: Some(run.to_path_buf()), day: 20000, ..Default::default() }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A root with the account files of a Debian minbase and a `core` user.
fn root_with_accounts() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc");
    fs::create_dir_all(etc.join("default")).unwrap();
    fs::create_dir_all(etc.join("skel")).unwrap();
    fs::create_dir_all(t.path().join("home/core")).unwrap();
    fs::write(etc.join("skel/.profile"), "# profile\n").unwrap();
    fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\ncore:x:1000:1000:Core:/home/core:/bin/bash\n").unwrap();
    fs::write(etc.join("group"), "root:x:0:\nsudo:x:27:\nusers:x:100:\ncore:x:1000:\n").unwrap();
    fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n").unwrap();
    fs::write(etc.join("gshadow"), "root:*::\nsudo:*::\nusers:*::\ncore:!::\n").unwrap();
    fs::write(
        etc.join("login.defs"),
        "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nSYS_UID_MIN 100\nSYS_UID_MAX 999\nSYS_GID_MIN 100\nSYS_GID_MAX 999\nUSERGROUPS_ENAB yes\nHOME_MODE 0700\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n",
    )
    .unwrap();
    fs::write(etc.join("default/useradd"), "SHELL=/bin/sh\n").unwrap();
    for f in ["shadow", "gshadow"] {
        fs::set_permissions(etc.join(f), fs::Permissions::from_mode(0o640)).unwrap();
    }
    t
}

#[test]
fn seed_example_1() {
    let c = parse_ok(SEED_1);
    assert_eq!(diags(&c), Vec::<String>::new());
    assert_eq!(c.hostname.as_deref(), Some("node01"));
    assert_eq!(c.write_files.len(), 1);
    assert_eq!(c.write_files[0].path, "/etc/systemd/timesyncd.conf");
    assert_eq!(c.write_files[0].content, b"[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org\n");
    assert_eq!(c.units.len(), 2);
    let (net, ssh) = (&c.units[0], &c.units[1]);
    assert_eq!((net.name.as_str(), net.runtime, net.command, net.is_network()), ("iface-eth0.network", true, None, true));
    assert!(net.content.as_deref().unwrap().starts_with("[Match]\nName=eth0\n\n[Network]\nDNS=188.93.16.19\n"));
    assert_eq!((ssh.name.as_str(), ssh.runtime, ssh.command), ("sshd.socket", true, Some(UnitCommand::Restart)));
    assert_eq!(ssh.content.as_deref(), Some("[Socket]\nListenStream=2345\nFreeBind=true\nAccept=yes\n"));

    let root = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let r = apply(root.path(), &c, &opts(run.path()));
    assert!(r.ok(), "{:#?}", r.log_lines());
    assert_eq!(fs::read_to_string(root.path().join("etc/hostname")).unwrap(), "node01\n");
    assert_eq!(r.hostname.as_deref(), Some("node01"));
    let ts = root.path().join("etc/systemd/timesyncd.conf");
    assert_eq!(fs::read(&ts).unwrap(), c.write_files[0].content);
    assert_eq!(mode(&ts), 0o644);
    assert_eq!(mode(&root.path().join("etc/systemd")), 0o755);
    // Runtime units go to the booted system's /run, i.e. run_dir.
    assert_eq!(fs::read_to_string(run.path().join("systemd/network/iface-eth0.network")).unwrap(), net.content.clone().unwrap());
    assert_eq!(fs::read_to_string(run.path().join("systemd/system/sshd.socket")).unwrap(), ssh.content.clone().unwrap());
    assert!(!root.path().join("run").exists());
    assert_eq!(r.after_boot, vec![vec!["systemctl".to_string(), "restart".into(), "sshd.socket".into()]]);
    assert!(r.network_changed);
    assert!(r.boot_commands.is_empty());
    // The report is JSON for /run/agent/provisioning.json.
    let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(j["hostname"], "node01");
    assert_eq!(j["steps"].as_array().unwrap().len(), r.steps.len());
    assert_eq!(j["steps"][0]["outcome"]["status"], "done");
}

#[test]
fn seed_example_1_as_printed_in_the_seed_is_not_applied() {
    // Without its indentation the document is still YAML up to line 8,
    // where `[Time]` starts a flow sequence that never becomes a key.
    match parse(SEED_1_FLAT.as_bytes()) {
        Err(e) => {
            assert!(e.line >= 7 && e.line <= 9, "{e}");
            assert!(e.to_string().contains(&format!("line {}", e.line)));
        }
        Ok(c) => panic!("the flattened seed parsed: {c:#?}"),
    }
}

#[test]
fn seed_example_2_etcd2_cluster() {
    let c = parse_ok(SEED_2);
    assert_eq!(diags(&c), Vec::<String>::new());
    let want: Vec<(&str, &str)> = vec![
        ("ETCD_ADVERTISE_CLIENT_URLS", "http://192.168.0.10:2379,http://192.168.0.10:4001"),
        ("ETCD_DISCOVERY", "https://discovery.etcd.io/ec42cfef0450bd8a99090ee3d3294493"),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://192.168.0.10:2380"),
        ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379,http://0.0.0.0:4001"),
        ("ETCD_LISTEN_PEER_URLS", "http://192.168.0.10:2380"),
    ];
    assert_eq!(c.etcd.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), want);
    assert_eq!(
        c.units.iter().map(|u| (u.name.as_str(), u.command)).collect::<Vec<_>>(),
        [("etcd2.service", Some(UnitCommand::Start)), ("fleet.service", Some(UnitCommand::Start))]
    );

    let root = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let r = apply(root.path(), &c, &opts(run.path()));
    assert!(r.ok(), "{:#?}", r.log_lines());
    let dropin = fs::read_to_string(run.path().join("systemd/system/etcd.service.d/20-cloudinit.conf")).unwrap();
    let mut expect = String::from("[Service]\n");
    for (k, v) in &want {
        expect += &format!("Environment=\"{k}={v}\"\n");
    }
    assert_eq!(dropin, expect);
    assert_eq!(r.after_boot, [["systemctl", "start", "etcd2.service"], ["systemctl", "start", "fleet.service"]]);
    assert!(!r.network_changed);
    // The unit name is a parameter.
    let run2 = tempfile::tempdir().unwrap();
    let o = ApplyOptions { etcd_unit: "etcd2.service".into(), ..opts(run2.path()) };
    apply(root.path(), &c, &o);
    assert!(run2.path().join("systemd/system/etcd2.service.d/20-cloudinit.conf").is_file());
}

#[test]
fn etcd_values_are_quoted_for_systemd_and_etcd_v1_merges_under_etcd2() {
    let c = parse_ok("coreos:\n  etcd:\n    name: old\n    addr: 1.2.3.4:4001\n  etcd2:\n    name: 'n%1\"x\\'\n    heartbeat_interval: 100\n    debug: true\n    bad key: 1\n    nested: {a: 1}\n");
    assert_eq!(c.etcd.get("ETCD_NAME").map(String::as_str), Some("n%1\"x\\"));
    assert_eq!(c.etcd.get("ETCD_ADDR").map(String::as_str), Some("1.2.3.4:4001"));
    assert_eq!(c.etcd.get("ETCD_HEARTBEAT_INTERVAL").map(String::as_str), Some("100"));
    assert_eq!(c.etcd.get("ETCD_DEBUG").map(String::as_str), Some("true"));
    let d = diags(&c);
    assert!(d.contains(&"coreos.etcd2.bad key: not an etcd option name (letters, digits, '-', '_'); ignored".to_string()), "{d:?}");
    assert!(d.iter().any(|x| x.starts_with("coreos.etcd2.nested: expected a value")), "{d:?}");
    assert!(d.iter().any(|x| x.starts_with("coreos.etcd: both etcd and etcd2")), "{d:?}");
    let text = etcd_dropin(&c.etcd);
    assert!(text.contains("Environment=\"ETCD_NAME=n%%1\\\"x\\\\\"\n"), "{text}");
}

#[test]
fn every_field_and_form() {
    let gz_b64 = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"zipped\n").unwrap();
        let gz = e.finish().unwrap();
        base64::engine::general_purpose::STANDARD.encode(gz)
    };
    let doc = format!(
        r#"#cloud-config
hostname: web-1.example.com
ssh_authorized_keys:
  - ssh-ed25519 AAAA top
users:
  - name: alice
    passwd: $6$salt$hash
    ssh-authorized-keys: [ssh-ed25519 AAAA alice]
    gecos: Alice A.
    homedir: /srv/alice
    no_create_home: yes
    primary_group: users
    groups: [sudo, docker]
    no_user_group: true
    system: false
    shell: /bin/bash
    uid: 1500
    lock_passwd: true
    sudo: ALL=(ALL) NOPASSWD:ALL
    no_log_init: true
  - name: bob
    groups: "sudo, adm ,docker"
    sudo: [ "ALL=(ALL) ALL", "ALL=(root) /bin/ls" ]
    ssh_authorized_keys: ssh-rsa AAAA bob
  - carol
  - default
write_files:
  - path: /a/plain
    content: plain
  - path: /a/b64
    encoding: b64
    content: aGVsbG8=
  - path: /a/base64
    encoding: base64
    content: |
      aGVs
      bG8=
  - {{path: /a/gzb64, encoding: gz+base64, content: {gz_b64}}}
  - {{path: /a/gzipb64, encoding: gzip+b64, content: {gz_b64}}}
  - {{path: /a/gzbase64, encoding: gz+b64, content: {gz_b64}}}
  - {{path: /a/gzipbase64, encoding: gzip+base64, content: {gz_b64}}}
  - {{path: /a/gz, encoding: gz, content: !!binary {gz_b64}}}
  - {{path: /a/gzip, encoding: gzip, content: !!binary {gz_b64}}}
  - {{path: /a/text, encoding: text/plain, content: t}}
  - {{path: /a/bin, content: !!binary AAEC}}
  - {{path: /a/p1, permissions: '0600'}}
  - {{path: /a/p2, permissions: 0600}}
  - {{path: /a/p3, permissions: 600}}
  - {{path: /a/p4, permissions: '0o4755'}}
  - {{path: /a/own, owner: 'core:users'}}
  - {{path: /a/app, content: x, append: true, defer: true}}
  - {{path: relative/file, content: r}}
manage_etc_hosts: localhost
runcmd:
  - echo one
  - [touch, "/tmp/it's"]
bootcmd:
  - [sh, -c, echo boot]
coreos:
  units:
    - name: app.service
      content: "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
      enable: true
      drop_ins:
        - name: 10-env.conf
          content: "[Service]\nEnvironment=A=1\n"
    - name: apt-daily.timer
      mask: true
    - name: x.service
      command: reload-or-try-restart
  update:
    reboot-strategy: off
  locksmith: {{window_start: "10:00"}}
  fleet: {{metadata: "a=b"}}
  flannel: {{interface: eth0}}
  oem: {{id: x}}
"#
    );
    let c = parse_ok(&doc);
    let d = diags(&c);
    assert_eq!(c.hostname.as_deref(), Some("web-1"));
    assert!(d.iter().any(|x| x.starts_with("hostname: \"web-1.example.com\" is used as \"web-1\"")), "{d:?}");
    assert_eq!(c.ssh_authorized_keys, ["ssh-ed25519 AAAA top"]);
    assert_eq!(c.users.len(), 3, "{:?}", c.users);
    let a = &c.users[0];
    assert_eq!(
        (a.name.as_str(), a.passwd.as_deref(), a.gecos.as_deref(), a.homedir.as_deref(), a.primary_group.as_deref(), a.shell.as_deref()),
        ("alice", Some("$6$salt$hash"), Some("Alice A."), Some("/srv/alice"), Some("users"), Some("/bin/bash"))
    );
    assert_eq!(a.ssh_authorized_keys, ["ssh-ed25519 AAAA alice"]);
    assert_eq!(a.groups, ["sudo", "docker"]);
    assert!(a.no_create_home && a.no_user_group && !a.system && a.lock_passwd);
    assert_eq!((a.uid, a.sudo.clone()), (Some(1500), vec!["ALL=(ALL) NOPASSWD:ALL".to_string()]));
    let b = &c.users[1];
    assert_eq!(b.groups, ["sudo", "adm", "docker"]);
    assert_eq!(b.sudo, ["ALL=(ALL) ALL", "ALL=(root) /bin/ls"]);
    assert_eq!(b.ssh_authorized_keys, ["ssh-rsa AAAA bob"]);
    assert_eq!((c.users[2].name.as_str(), c.users[2].source.as_str()), ("carol", "users[2]"));
    assert!(d.iter().any(|x| x.starts_with("users[3]: the default user")), "{d:?}");

    let f = |p: &str| c.write_files.iter().find(|f| f.path == p).unwrap_or_else(|| panic!("{p} missing: {d:?}"));
    assert_eq!(f("/a/plain").content, b"plain");
    for p in ["/a/b64", "/a/base64"] {
        assert_eq!(f(p).content, b"hello", "{p}");
    }
    for p in ["/a/gzb64", "/a/gzipb64", "/a/gzbase64", "/a/gzipbase64", "/a/gz", "/a/gzip"] {
        assert_eq!(f(p).content, b"zipped\n", "{p}");
    }
    assert_eq!(f("/a/text").content, b"t");
    assert_eq!(f("/a/bin").content, [0, 1, 2]);
    assert_eq!(f("/a/plain").permissions, None);
    for p in ["/a/p1", "/a/p2", "/a/p3"] {
        assert_eq!(f(p).permissions, Some(0o600), "{p}");
    }
    assert_eq!(f("/a/p4").permissions, Some(0o4755));
    assert_eq!(f("/a/own").owner.as_deref(), Some("core:users"));
    assert!(f("/a/app").append && !f("/a/plain").append);
    assert_eq!(f("/relative/file").content, b"r");
    assert!(d.iter().any(|x| x.starts_with("write_files[17].path: \"relative/file\" is not absolute")), "{d:?}");
    assert!(c.manage_etc_hosts);
    assert_eq!(c.runcmd, [Command::Shell("echo one".into()), Command::Argv(vec!["touch".into(), "/tmp/it's".into()])]);
    assert_eq!(c.bootcmd, [Command::Argv(vec!["sh".into(), "-c".into(), "echo boot".into()])]);
    assert_eq!(c.units.len(), 3);
    let app = &c.units[0];
    assert!(app.enable && !app.runtime && !app.mask);
    assert_eq!(app.drop_ins, [DropIn { name: "10-env.conf".into(), content: "[Service]\nEnvironment=A=1\n".into() }]);
    assert!(c.units[1].mask);
    assert_eq!(c.units[2].command, Some(UnitCommand::ReloadOrTryRestart));
    for s in ["update", "locksmith", "fleet", "flannel", "oem"] {
        assert!(d.contains(&format!("coreos.{s}: not supported on this image; ignored")), "{s}: {d:?}");
    }
    // Nothing else was reported.
    assert_eq!(d.len(), 8, "{d:#?}");

    // The runcmd script is cloud-init's shellify.
    let p = plan(&c, &ApplyOptions::default());
    assert_eq!(p.after_boot.last().unwrap(), &["/bin/sh", "-c", "#!/bin/sh\necho one\n'touch' '/tmp/it'\\''s'\n"]);
    assert_eq!(p.after_boot[0], ["systemctl", "reload-or-try-restart", "x.service"]);
    assert_eq!(p.boot_commands, [["/bin/sh", "-c", "#!/bin/sh\n'sh' '-c' 'echo boot'\n"]]);
    // runcmd is per instance: not planned after the first boot.
    let later = plan(&c, &ApplyOptions { first_boot: false, ..Default::default() });
    assert_eq!(later.after_boot, [["systemctl", "reload-or-try-restart", "x.service"]]);
    assert_eq!(later.boot_commands, p.boot_commands);
}

#[test]
fn unknown_keys_and_bad_values_are_reported_by_path_and_the_rest_is_applied() {
    let doc = "#cloud-config
hostnme: x
hostname: ok
packages: [vim]
write_files:
  - path: /good
    content: yes
    mode: 0600
  - path: /bad-perm
    permissions: rw-r--r--
  - path: /bad-enc
    encoding: rot13
    content: x
  - path: /bad-b64
    encoding: b64
    content: '!!!'
  - content: no path
  - just a string
coreos:
  units:
    - name: ok.service
      command: start
    - name: typo.service
      commnd: start
      enable: maybe
    - name: bad.service
      command: explode
    - name: no-suffix
    - content: x
    - name: net.network
      command: restart
      enable: true
      drop_ins:
        - {name: bad, content: x}
        - {name: empty.conf}
  etcd3: {}
users:
  - name: 'bad:name'
  - gecos: nameless
manage_etc_hosts: sometimes
runcmd:
  - [ls, {a: 1}]
  - {a: 1}
";
    let c = parse_ok(doc);
    let d = diags(&c);
    let expect = [
        "hostnme: unknown key",
        "packages: cloud-init module not supported on this image; ignored",
        "write_files[0].mode: unknown key",
        "write_files[1].permissions: expected an octal mode such as '0644', found \"rw-r--r--\"; the file is skipped",
        "write_files[2].encoding: unknown encoding \"rot13\" (b64, base64, gz, gzip, gz+base64, gzip+base64, gz+b64, gzip+b64); the file is skipped",
        "write_files[4]: a file needs a path; skipped",
        "write_files[5]: expected a mapping, found a scalar",
        "coreos.units[1].commnd: unknown key",
        "coreos.units[1].enable: expected true or false, found \"maybe\"",
        "coreos.units[2].command: \"explode\" is not a unit command (start, stop, restart, reload, try-restart, reload-or-restart, reload-or-try-restart); ignored",
        "coreos.units[3].name: \"no-suffix\" is not a unit name (NAME.service, .socket, .timer, .network …); skipped",
        "coreos.units[4]: a unit needs a name; skipped",
        "coreos.units[5].drop_ins[0]: a drop-in needs a file name ending in .conf, found \"bad\"; skipped",
        "coreos.units[5].drop_ins[1]: no content; skipped",
        "coreos.units[5].command: networkd reads .network/.netdev/.link files when it starts; a command on them is ignored, as in coreos-cloudinit",
        "coreos.units[5].enable: networkd files are not enabled; ignored, as in coreos-cloudinit",
        "coreos.etcd3: unknown key",
        "users[0].name: \"bad:name\" is not a valid user name; skipped",
        "users[1]: a user needs a name; skipped",
        "manage_etc_hosts: expected localhost, true or false, found \"sometimes\"; /etc/hosts left alone",
        "runcmd[0][1]: expected a string, found a mapping",
        "runcmd[0]: a command list must hold strings only; skipped",
        "runcmd[1]: expected a string or a list of strings, found a mapping; skipped",
    ];
    for e in expect {
        assert!(d.iter().any(|x| x == e), "missing {e:?} in {d:#?}");
    }
    assert!(d.iter().any(|x| x.starts_with("write_files[3].content: not valid base64")), "{d:#?}");
    assert_eq!(d.len(), expect.len() + 1, "{d:#?}");
    // The diagnostic names its place: `path: message (line, column)`.
    let typo = c.diagnostics.iter().find(|x| x.path == "coreos.units[1].commnd").unwrap();
    assert_eq!((typo.line, typo.column, typo.severity), (24, 7, Severity::Warning));
    assert_eq!(typo.to_string(), "coreos.units[1].commnd: unknown key (line 24, column 7)");
    // What was right is kept and applied.
    assert_eq!(c.hostname.as_deref(), Some("ok"));
    assert_eq!(c.write_files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/good"]);
    assert_eq!(c.write_files[0].content, b"yes");
    assert_eq!(c.units.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["ok.service", "typo.service", "bad.service", "net.network"]);
    assert!(!c.manage_etc_hosts);
    let root = tempfile::tempdir().unwrap();
    let r = apply(root.path(), &c, &opts(&root.path().join("run")));
    assert!(!r.ok(), "error diagnostics make the report not ok");
    assert!(r.steps.iter().all(|s| matches!(s.outcome, Outcome::Done(_))), "{:#?}", r.log_lines());
    assert_eq!(fs::read(root.path().join("good")).unwrap(), b"yes");
    assert_eq!(r.after_boot, [["systemctl", "start", "ok.service"]]);
    assert!(r.log_lines().iter().any(|l| l.starts_with("cloud-config: coreos.units[1].commnd: unknown key")));
}

#[test]
fn syntax_errors_apply_nothing_and_say_where() {
    for (doc, line) in [
        ("#cloud-config\nhostname: a\nwrite_files:\n  - path: /x\n   content: y\n", 5),
        ("#cloud-config\nusers: [a, b\nhostname: x\n", 3),
        ("#cloud-config\nhostname: \"unterminated\n", 2),
        ("#cloud-config\na: b\n\tc: d\n", 2),
        ("#cloud-config\nx: *nowhere\n", 2),
    ] {
        let e = parse(doc.as_bytes()).unwrap_err();
        assert_eq!(e.line, line, "{doc:?}: {e}");
        assert!(e.column >= 1);
        assert!(e.to_string().contains("nothing applied"));
    }
    let e = parse(b"#cloud-config\nhostname: caf\xc3\n").unwrap_err();
    assert_eq!((e.line, e.column, e.message.as_str()), (2, 14, "not UTF-8"));
    // Not a mapping: a diagnostic, nothing applied.
    let c = parse(b"#cloud-config\n- a\n- b\n").unwrap();
    assert_eq!(c, CloudConfig { diagnostics: c.diagnostics.clone(), ..Default::default() });
    assert_eq!(diags(&c), ["(document): a #cloud-config document is a mapping, found a list; nothing applied"]);
    // Empty documents are empty configs.
    for doc in ["#cloud-config\n", "", "\u{feff}#cloud-config\n# nothing\n", "#cloud-config\n---\n"] {
        assert_eq!(parse(doc.as_bytes()).unwrap(), CloudConfig::default(), "{doc:?}");
    }
}

#[test]
fn write_files_modes_owners_append_and_first_boot() {
    let root = root_with_accounts();
    let r0 = root.path();
    let doc = "write_files:
  - {path: /etc/app/conf, content: one, permissions: '0600', owner: 'core:sudo'}
  - {path: /etc/app/conf2, content: two, owner: core}
  - {path: /var/log/app.log, content: \"line\\n\", append: true}
  - {path: /etc/app/setuid, content: s, permissions: '4755', owner: core}
  - {path: /etc/app/nobody, content: s, owner: 'ghost:root'}
  - {path: /etc/app/numeric, content: s, owner: '4242:4343'}
";
    let c = parse_ok(doc);
    let r = apply(r0, &c, &opts(&r0.join("run")));
    let failed: Vec<_> = r.steps.iter().filter(|s| matches!(s.outcome, Outcome::Failed(_))).map(|s| s.source.clone()).collect();
    assert_eq!(failed, ["write_files[4]"], "{:#?}", r.log_lines());
    let m = |p: &str| fs::metadata(r0.join(p)).unwrap();
    assert_eq!((m("etc/app/conf").mode() & 0o7777, m("etc/app/conf").uid(), m("etc/app/conf").gid()), (0o600, 1000, 27));
    assert_eq!((m("etc/app/conf2").mode() & 0o7777, m("etc/app/conf2").uid(), m("etc/app/conf2").gid()), (0o644, 1000, 0));
    assert_eq!((m("etc/app/numeric").uid(), m("etc/app/numeric").gid()), (4242, 4343));
    // chown before chmod: the set-uid bit survives.
    assert_eq!(m("etc/app/setuid").mode() & 0o7777, 0o4755);
    assert!(!r0.join("etc/app/nobody").exists());
    assert_eq!(fs::read_to_string(r0.join("var/log/app.log")).unwrap(), "line\n");
    // No temp files left behind.
    let names: Vec<String> =
        fs::read_dir(r0.join("etc/app")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // First boot again (a re-run): appends again; a later boot: skipped.
    apply(r0, &c, &opts(&r0.join("run")));
    assert_eq!(fs::read_to_string(r0.join("var/log/app.log")).unwrap(), "line\nline\n");
    let later = apply(r0, &c, &ApplyOptions { first_boot: false, ..opts(&r0.join("run")) });
    assert_eq!(fs::read_to_string(r0.join("var/log/app.log")).unwrap(), "line\nline\n");
    let s = later.steps.iter().find(|s| s.source == "write_files[2]").unwrap();
    assert_eq!((s.frequency, &s.outcome), (Frequency::PerInstance, &Outcome::Skipped("per instance: first boot only".into())));
    // Every-boot files are rewritten: a changed file is put back.
    fs::write(r0.join("etc/app/conf2"), "changed").unwrap();
    apply(r0, &c, &ApplyOptions { first_boot: false, ..opts(&r0.join("run")) });
    assert_eq!(fs::read_to_string(r0.join("etc/app/conf2")).unwrap(), "two");
}

#[test]
fn paths_stay_inside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let r0 = root.path();
    fs::create_dir_all(r0.join("etc")).unwrap();
    // An absolute symlink in the root means the root's /etc at boot.
    std::os::unix::fs::symlink("/etc", r0.join("cfg")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r0.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../..", r0.join("etc/up")).unwrap();
    let c = parse_ok(&format!(
        "write_files:
  - {{path: /cfg/a, content: a}}
  - {{path: /escape/b, content: b}}
  - {{path: /etc/up/c, content: c}}
  - {{path: '/../../../d', content: d}}
  - {{path: /etc/up/../e, content: e}}
  - {{path: /{}/f, content: f}}
",
        outside.path().display()
    ));
    let r = apply(r0, &c, &opts(&r0.join("run")));
    assert!(r.ok(), "{:#?}", r.log_lines());
    assert_eq!(fs::read_to_string(r0.join("etc/a")).unwrap(), "a");
    // The symlink's target is taken inside the root.
    assert_eq!(fs::read_to_string(r0.join(outside.path().strip_prefix("/").unwrap()).join("b")).unwrap(), "b");
    assert_eq!(fs::read_to_string(r0.join("c")).unwrap(), "c");
    assert_eq!(fs::read_to_string(r0.join("d")).unwrap(), "d");
    // `..` is taken lexically first, as Go's path.Join did in coreos-cloudinit.
    assert_eq!(fs::read_to_string(r0.join("etc/e")).unwrap(), "e");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside the root");
    // A symlink at the target itself is replaced, not followed.
    std::os::unix::fs::symlink(outside.path().join("g"), r0.join("g")).unwrap();
    let r = apply(r0, &parse_ok("write_files: [{path: /g, content: g}]"), &opts(&r0.join("run")));
    assert!(r.ok());
    assert!(fs::symlink_metadata(r0.join("g")).unwrap().is_file());
    assert!(!outside.path().join("g").exists());
    // A loop is an error, not a hang.
    std::os::unix::fs::symlink("/loop", r0.join("loop")).unwrap();
    let r = apply(r0, &parse_ok("write_files: [{path: /loop/x, content: x}]"), &opts(&r0.join("run")));
    assert!(matches!(&r.steps[0].outcome, Outcome::Failed(e) if e.contains("too many levels")), "{:?}", r.steps);
}

#[test]
fn units_enable_mask_unmask_and_drop_ins() {
    let root = tempfile::tempdir().unwrap();
    let r0 = root.path();
    let run = tempfile::tempdir().unwrap();
    let lib = r0.join("usr/lib/systemd/system");
    fs::create_dir_all(&lib).unwrap();
    fs::write(lib.join("etcd.service"), "[Unit]\nDescription=etcd\n\n[Install]\nWantedBy=multi-user.target\nAlias=etcd2.service\n")
        .unwrap();
    fs::write(lib.join("getty@.service"), "[Service]\nExecStart=/sbin/agetty\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n")
        .unwrap();
    fs::write(lib.join("plain.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
    fs::write(lib.join("pair.socket"), "[Socket]\nListenStream=1\n[Install]\nWantedBy=sockets.target\nAlso=pair2.service\n").unwrap();
    fs::write(
        lib.join("pair2.service"),
        "[Service]\nExecStart=/bin/true\n[Install]\nRequiredBy=\\\n  multi-user.target \\\n  graphical.target\n",
    )
    .unwrap();
    // A runtime mask left from an earlier boot is removed for a runtime unit.
    fs::create_dir_all(run.path().join("systemd/system")).unwrap();
    std::os::unix::fs::symlink("/dev/null", run.path().join("systemd/system/rt.service")).unwrap();
    let doc = "coreos:
  units:
    - name: app.service
      enable: true
      content: |
        [Service]
        ExecStart=/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target default.target
      drop_ins:
        - name: 10-a.conf
          content: \"[Service]\\nEnvironment=A=1\\n\"
    - {name: etcd.service, enable: true}
    - {name: getty@ttyS0.service, enable: true}
    - {name: plain.service, enable: true}
    - {name: pair.socket, enable: true}
    - {name: rt.service, runtime: true, enable: true, content: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"}
    - {name: apt-daily.timer, mask: true}
    - {name: masked-with-content.service, mask: true, content: \"[Service]\\n\"}
    - {name: missing.service, enable: true}
    - name: eth.netdev
      content: \"[NetDev]\\nName=br0\\nKind=bridge\\n\"
    - name: ssh.service
      drop_ins: [{name: port.conf, content: \"[Service]\\nExecStart=\\n\"}]
";
    let c = parse_ok(doc);
    assert_eq!(diags(&c), Vec::<String>::new());
    let r = apply(r0, &c, &opts(run.path()));
    let link =
        |p: &Path| fs::read_link(p).unwrap_or_else(|e| panic!("{}: {e}; {:#?}", p.display(), r.log_lines())).to_string_lossy().into_owned();
    let etc = r0.join("etc/systemd/system");
    assert_eq!(link(&etc.join("multi-user.target.wants/app.service")), "/etc/systemd/system/app.service");
    assert_eq!(link(&etc.join("default.target.wants/app.service")), "/etc/systemd/system/app.service");
    assert_eq!(fs::read_to_string(etc.join("app.service.d/10-a.conf")).unwrap(), "[Service]\nEnvironment=A=1\n");
    assert_eq!(link(&etc.join("multi-user.target.wants/etcd.service")), "/usr/lib/systemd/system/etcd.service");
    assert_eq!(link(&etc.join("etcd2.service")), "/usr/lib/systemd/system/etcd.service");
    assert_eq!(link(&etc.join("getty.target.wants/getty@ttyS0.service")), "/usr/lib/systemd/system/getty@.service");
    assert_eq!(link(&etc.join("sockets.target.wants/pair.socket")), "/usr/lib/systemd/system/pair.socket");
    assert_eq!(link(&etc.join("multi-user.target.requires/pair2.service")), "/usr/lib/systemd/system/pair2.service");
    assert_eq!(link(&etc.join("graphical.target.requires/pair2.service")), "/usr/lib/systemd/system/pair2.service");
    assert_eq!(link(&etc.join("apt-daily.timer")), "/dev/null");
    assert_eq!(link(&etc.join("masked-with-content.service")), "/dev/null");
    assert_eq!(link(&run.path().join("systemd/system/multi-user.target.wants/rt.service")), "/run/systemd/system/rt.service");
    assert!(fs::symlink_metadata(run.path().join("systemd/system/rt.service")).unwrap().is_file());
    assert_eq!(fs::read_to_string(r0.join("etc/systemd/network/eth.netdev")).unwrap(), "[NetDev]\nName=br0\nKind=bridge\n");
    assert!(etc.join("ssh.service.d/port.conf").is_file() && !etc.join("ssh.service").exists());
    assert!(r.network_changed);
    let outcome = |src: &str| r.steps.iter().find(|s| s.source == src).map(|s| s.outcome.clone()).unwrap();
    assert!(matches!(outcome("coreos.units[3].enable"), Outcome::Done(d) if d.contains("has no [Install]")));
    assert!(matches!(outcome("coreos.units[8].enable"), Outcome::Failed(d) if d.contains("no such unit file")));
    assert_eq!(r.steps.iter().filter(|s| matches!(s.outcome, Outcome::Failed(_))).count(), 1, "{:#?}", r.log_lines());
    // Applying again changes nothing and fails nothing more.
    let again = apply(r0, &c, &opts(run.path()));
    assert_eq!(
        again.steps.iter().map(|s| (&s.source, matches!(s.outcome, Outcome::Failed(_)))).collect::<Vec<_>>(),
        r.steps.iter().map(|s| (&s.source, matches!(s.outcome, Outcome::Failed(_)))).collect::<Vec<_>>()
    );
    assert_eq!(link(&etc.join("multi-user.target.wants/app.service")), "/etc/systemd/system/app.service");
}

#[test]
fn etc_hosts_from_the_document_the_options_or_the_root() {
    let root = tempfile::tempdir().unwrap();
    let r0 = root.path();
    let r = apply(r0, &parse_ok("hostname: node7\nmanage_etc_hosts: true\n"), &opts(&r0.join("run")));
    assert!(r.ok(), "{:#?}", r.log_lines());
    assert_eq!(fs::read_to_string(r0.join("etc/hosts")).unwrap(), etc_hosts("node7"));
    assert!(etc_hosts("node7").starts_with("127.0.0.1 node7\n"));
    let c = parse_ok("manage_etc_hosts: localhost\n");
    let r = apply(r0, &c, &ApplyOptions { hostname: Some("meta".into()), ..opts(&r0.join("run")) });
    assert!(r.ok());
    assert_eq!(fs::read_to_string(r0.join("etc/hosts")).unwrap(), etc_hosts("meta"));
    // From the root's /etc/hostname (written by the first apply).
    let r = apply(r0, &c, &opts(&r0.join("run")));
    assert!(r.ok(), "{:#?}", r.log_lines());
    assert_eq!(fs::read_to_string(r0.join("etc/hosts")).unwrap(), etc_hosts("node7"));
    assert_eq!(r.hostname.as_deref(), Some("node7"));
    // No name anywhere: that step fails, cleanly.
    let empty = tempfile::tempdir().unwrap();
    let r = apply(empty.path(), &c, &opts(&empty.path().join("run")));
    assert!(matches!(&r.steps[0].outcome, Outcome::Failed(e) if e.contains("no host name")));
    assert!(parse_ok("manage_etc_hosts: false\n").manage_etc_hosts.clone().eq(&false));
}

#[test]
fn frequencies() {
    assert_eq!(frequency("runcmd"), Frequency::PerInstance);
    assert_eq!(frequency("write_files.append"), Frequency::PerInstance);
    for k in ["hostname", "users", "write_files", "ssh_authorized_keys", "manage_etc_hosts", "coreos.units", "coreos.etcd2", "bootcmd"] {
        assert_eq!(frequency(k), Frequency::PerBoot, "{k}");
    }
    let c = parse_ok("runcmd: [a]\nbootcmd: [b]\n");
    let root = tempfile::tempdir().unwrap();
    let later = apply(root.path(), &c, &ApplyOptions { first_boot: false, ..opts(&root.path().join("run")) });
    assert!(later.after_boot.is_empty());
    assert_eq!(later.boot_commands.len(), 1);
    assert_eq!(later.steps[0].outcome, Outcome::Skipped("per instance: first boot only".into()));
}

#[test]
fn users_and_keys_through_passwd() {
    let root = root_with_accounts();
    let r0 = root.path();
    let doc = "ssh_authorized_keys: [ssh-ed25519 AAAA top]
users:
  - name: alice
    gecos: Alice
    groups: sudo, newgrp
    ssh_authorized_keys: [ssh-ed25519 AAAA alice]
    sudo: ALL=(ALL) NOPASSWD:ALL
  - name: svc
    system: true
    no_create_home: true
    shell: /usr/sbin/nologin
  - name: core
    passwd: $6$abc$def
    gecos: ignored for an existing user
";
    let c = parse_ok(doc);
    let r = apply(r0, &c, &opts(&r0.join("run")));
    assert!(r.ok(), "{:#?}", r.log_lines());
    let passwd = fs::read_to_string(r0.join("etc/passwd")).unwrap();
    let alice = passwd.lines().find(|l| l.starts_with("alice:")).unwrap_or_else(|| panic!("{passwd}"));
    assert!(alice.ends_with(":Alice:/home/alice:/bin/sh"), "{alice}");
    let svc = passwd.lines().find(|l| l.starts_with("svc:")).unwrap();
    let svc_uid: u32 = svc.split(':').nth(2).unwrap().parse().unwrap();
    assert!(svc_uid < 1000, "{svc}");
    assert!(!r0.join("home/svc").exists());
    assert!(passwd.contains("core:x:1000:1000:Core:/home/core:/bin/bash\n"), "core untouched but its password: {passwd}");
    let group = fs::read_to_string(r0.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "sudo:x:27:alice"), "{group}");
    assert!(group.lines().any(|l| l.starts_with("newgrp:x:") && l.ends_with(":alice")), "{group}");
    let shadow = fs::read_to_string(r0.join("etc/shadow")).unwrap();
    assert!(shadow.lines().any(|l| l.starts_with("core:$6$abc$def:")), "{shadow}");
    let keys = |u: &str| fs::read_to_string(r0.join(format!("home/{u}/.ssh/authorized_keys"))).unwrap();
    assert_eq!(keys("alice"), "ssh-ed25519 AAAA alice\n");
    assert_eq!(keys("core"), "ssh-ed25519 AAAA top\n");
    let ak = fs::metadata(r0.join("home/alice/.ssh/authorized_keys")).unwrap();
    assert_eq!((ak.mode() & 0o777, ak.uid()), (0o600, alice.split(':').nth(2).unwrap().parse().unwrap()));
    assert_eq!(
        fs::read_to_string(r0.join("etc/sudoers.d/90-cloud-init-users")).unwrap().lines().last(),
        Some("alice ALL=(ALL) NOPASSWD:ALL")
    );
    assert_eq!(mode(&r0.join("etc/sudoers.d/90-cloud-init-users")), 0o440);
    // Keys already there are kept, new ones added once; a re-run adds nothing.
    fs::write(r0.join("home/core/.ssh/authorized_keys"), "ssh-rsa OLD admin\n").unwrap();
    let r = apply(r0, &c, &opts(&r0.join("run")));
    assert!(r.ok(), "{:#?}", r.log_lines());
    assert_eq!(keys("core"), "ssh-rsa OLD admin\nssh-ed25519 AAAA top\n");
    let before = fs::read_to_string(r0.join("etc/passwd")).unwrap();
    apply(r0, &c, &opts(&r0.join("run")));
    assert_eq!(fs::read_to_string(r0.join("etc/passwd")).unwrap(), before);
    assert_eq!(keys("core"), "ssh-rsa OLD admin\nssh-ed25519 AAAA top\n");
    // Keys for a user the root does not have: that step fails, the rest is done.
    let r = apply(
        r0,
        &parse_ok("ssh_authorized_keys: [k]\nhostname: h\n"),
        &ApplyOptions { oem_user: "nobody-here".into(), ..opts(&r0.join("run")) },
    );
    assert_eq!(r.steps.iter().filter(|s| matches!(s.outcome, Outcome::Failed(_))).count(), 1);
    assert_eq!(fs::read_to_string(r0.join("etc/hostname")).unwrap(), "h\n");
}

proptest::proptest! {
    #[test]
    fn parse_never_panics_on_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
        let _ = parse(&data);
    }

    #[test]
    fn parse_never_panics_on_text(s in "\\PC{0,400}") {
        let _ = parse(s.as_bytes());
    }

    /// Documents built from the pieces of the real grammar, so that the
    /// reader gets past YAML into every field.
    #[test]
    fn parse_and_plan_never_panic_on_cloud_config_shapes(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "hostname: ", "users:", "write_files:", "coreos:", "units:", "etcd2:", "- ", "  ", "    ", "name: ", "content: ",
            "encoding: ", "b64", "gz+base64", "permissions: ", "0644", "'0o7777'", "owner: ", "append: ", "yes", "~", "{}", "[]",
            "command: ", "restart", "enable: ", "mask: ", "runtime: ", "drop_ins:", "groups: ", "a, b", "!!binary ", "aGk=", "&a ",
            "*a", "<<: ", "\n", "runcmd:", "bootcmd:", "ssh_authorized_keys:", "manage_etc_hosts: ", "x.service", "/p", ": ", "\"", "'",
            "[", "]", "{", "}", ",", "#", "|", ">", "\t",
        ]), 0..60)
    ) {
        let doc: String = parts.concat();
        if let Ok(c) = parse(doc.as_bytes()) {
            let _ = plan(&c, &ApplyOptions::default());
            for d in &c.diagnostics {
                proptest::prop_assert!(d.line >= 1 && d.column >= 1, "{d:?}");
            }
        }
    }
}
