//! Kernel command line (`/proc/cmdline`) parsing: pure, no I/O.
//!
//! Tokenising follows the kernel's own `next_arg()` (lib/cmdline.c): words
//! are split on whitespace outside double quotes, the first `=` separates
//! key and value, and one pair of surrounding quotes is stripped from the
//! value. Everything after a lone `--` is passed to init as its arguments,
//! exactly as the kernel does for its own init.

use std::fmt;

/// Where the root filesystem is, as written after `root=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=PARTUUID=<guid>`: the GPT partition's unique GUID (lower case).
    PartUuid(String),
    /// `root=PARTLABEL=<name>`: the GPT partition name.
    PartLabel(String),
    /// `root=UUID=<uuid>`: the filesystem UUID (lower case).
    Uuid(String),
    /// `root=LABEL=<label>`: the filesystem label.
    Label(String),
    /// `root=/dev/vda2`: a device path.
    Path(String),
}

impl RootSpec {
    /// Parse the value of `root=`; `None` for an empty value.
    pub fn parse(v: &str) -> Option<RootSpec> {
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        // `get`: the value may be any UTF-8, and byte p.len() need not be
        // a character boundary (a panic here was found by fuzz/).
        let upper = |p: &str| v.len() > p.len() && v.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        Some(if upper("PARTUUID=") {
            RootSpec::PartUuid(v["PARTUUID=".len()..].to_ascii_lowercase())
        } else if upper("PARTLABEL=") {
            RootSpec::PartLabel(v["PARTLABEL=".len()..].to_string())
        } else if upper("UUID=") {
            RootSpec::Uuid(v["UUID=".len()..].to_ascii_lowercase())
        } else if upper("LABEL=") {
            RootSpec::Label(v["LABEL=".len()..].to_string())
        } else {
            RootSpec::Path(v.to_string())
        })
    }
}

impl fmt::Display for RootSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            RootSpec::PartLabel(u) => write!(f, "PARTLABEL={u}"),
            RootSpec::Uuid(u) => write!(f, "UUID={u}"),
            RootSpec::Label(l) => write!(f, "LABEL={l}"),
            RootSpec::Path(p) => f.write_str(p),
        }
    }
}

/// What the agent takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    /// `root=`; `None` means "run the appliance from the initramfs".
    pub root: Option<RootSpec>,
    /// `rootfstype=`: one or more comma-separated filesystem types.
    pub rootfstype: Option<String>,
    /// `rootflags=`: filesystem-specific mount data.
    pub rootflags: Option<String>,
    /// `ro`/`rw`: the last one wins; the kernel default is read-only.
    pub read_only: bool,
    /// `init=`: the root's init after switch_root.
    pub init: Option<String>,
    /// `agent.init=`: overrides `init=` after switch_root and `/etc/agent/init`
    /// without root.
    pub agent_init: Option<String>,
    /// `agent.debug`: more logging.
    pub debug: bool,
    /// `agent.rootwait=<seconds>`: how long to wait for the root device.
    pub rootwait_secs: Option<u32>,
    /// Words after `--`: extra arguments for the init that is run.
    pub init_args: Vec<String>,
}

/// Split a command line into (key, value) words the way the kernel does.
/// Returns the parameters and the words after `--`.
pub fn tokenize(s: &str) -> (Vec<(String, Option<String>)>, Vec<String>) {
    let mut params = Vec::new();
    let mut rest = Vec::new();
    let mut after_dashes = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut in_quote = false;
        let mut equals = None;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() && !in_quote {
                break;
            }
            if equals.is_none() && c == b'=' {
                equals = Some(i);
            }
            if c == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        let word = &s[start..i];
        if !after_dashes && word == "--" {
            after_dashes = true;
            continue;
        }
        let (key, val) = match equals {
            Some(e) => (&s[start..e], Some(unquote(&s[e + 1..i]))),
            None => (word, None),
        };
        let key = unquote(key);
        if after_dashes {
            rest.push(match val {
                Some(v) => format!("{key}={v}"),
                None => key,
            });
        } else {
            params.push((key, val));
        }
    }
    (params, rest)
}

fn unquote(s: &str) -> String {
    let s = s.strip_prefix('"').unwrap_or(s);
    let s = s.strip_suffix('"').unwrap_or(s);
    s.replace('"', "")
}

impl Cmdline {
    /// Parse the text of `/proc/cmdline`. Unknown keys are ignored; the last
    /// occurrence of a key wins, as in the kernel.
    pub fn parse(s: &str) -> Cmdline {
        let (params, init_args) = tokenize(s);
        let mut c = Cmdline { read_only: true, init_args, ..Default::default() };
        for (k, v) in params {
            let nonempty = v.filter(|v| !v.is_empty());
            match k.as_str() {
                "root" => c.root = nonempty.as_deref().and_then(RootSpec::parse),
                "rootfstype" => c.rootfstype = nonempty,
                "rootflags" => c.rootflags = nonempty,
                "ro" => c.read_only = true,
                "rw" => c.read_only = false,
                "init" => c.init = nonempty,
                "agent.init" => c.agent_init = nonempty,
                "agent.debug" => c.debug = !matches!(nonempty.as_deref(), Some("0" | "no" | "false")),
                "agent.rootwait" => c.rootwait_secs = nonempty.and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        c
    }

    /// The program to exec after switch_root: `agent.init=`, `init=`, or `/sbin/init`.
    pub fn root_init(&self) -> &str {
        self.agent_init.as_deref().or(self.init.as_deref()).unwrap_or("/sbin/init")
    }
}

/// Parse `/etc/agent/init`: one argument per line (an argument may contain
/// spaces; a final newline does not start an empty argument). `None` if the
/// file gives no program.
pub fn parse_argv_file(s: &str) -> Option<Vec<String>> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let argv: Vec<String> = s.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()).collect();
    if argv[0].trim().is_empty() {
        return None;
    }
    Some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/ (target `cmdline`): a `root=` value with a
    /// multi-byte character where `PARTUUID=`, `UUID=`… would end panicked
    /// (a byte index inside the character).
    #[test]
    fn root_values_with_multibyte_characters() {
        for v in ["PARTUUI\u{fffd}x", "UUI\u{fffd}", "LABEL\u{e9}x", "\u{fffd}\u{fffd}\u{fffd}\u{fffd}"] {
            let c = Cmdline::parse(&format!("root={v} ro"));
            assert_eq!(c.root, Some(RootSpec::Path(v.to_string())), "{v}");
        }
        assert_eq!(RootSpec::parse("label=r\u{e9}seau"), Some(RootSpec::Label("r\u{e9}seau".into())));
    }

    #[test]
    fn typical_debian_line() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4 ro console=ttyS0 quiet\n");
        assert_eq!(c.root, Some(RootSpec::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into())));
        assert!(c.read_only);
        assert_eq!(c.root_init(), "/sbin/init");
        assert!(!c.debug);
    }

    #[test]
    fn root_forms() {
        assert_eq!(RootSpec::parse("UUID=ABC"), Some(RootSpec::Uuid("abc".into())));
        assert_eq!(RootSpec::parse("LABEL=Root FS"), Some(RootSpec::Label("Root FS".into())));
        assert_eq!(RootSpec::parse("PARTLABEL=root-x86-64"), Some(RootSpec::PartLabel("root-x86-64".into())));
        assert_eq!(RootSpec::parse("partuuid=AA"), Some(RootSpec::PartUuid("aa".into())));
        assert_eq!(RootSpec::parse("/dev/vda2"), Some(RootSpec::Path("/dev/vda2".into())));
        assert_eq!(RootSpec::parse(""), None);
        // "UUID=" with nothing after it is not a UUID.
        assert_eq!(RootSpec::parse("UUID="), Some(RootSpec::Path("UUID=".into())));
    }

    #[test]
    fn last_wins_and_rw() {
        let c = Cmdline::parse("rw root=/dev/sda1 root=/dev/vda1 ro rw rootfstype=btrfs rootflags=subvol=@,compress=zstd");
        assert_eq!(c.root, Some(RootSpec::Path("/dev/vda1".into())));
        assert!(!c.read_only);
        assert_eq!(c.rootfstype.as_deref(), Some("btrfs"));
        assert_eq!(c.rootflags.as_deref(), Some("subvol=@,compress=zstd"));
    }

    #[test]
    fn agent_keys_and_init_precedence() {
        let c = Cmdline::parse("init=/lib/systemd/systemd agent.debug agent.rootwait=30");
        assert_eq!(c.root_init(), "/lib/systemd/systemd");
        assert!(c.debug);
        assert_eq!(c.rootwait_secs, Some(30));
        let c = Cmdline::parse("init=/lib/systemd/systemd agent.init=/bin/sh agent.debug=0");
        assert_eq!(c.root_init(), "/bin/sh");
        assert!(!c.debug);
        assert_eq!(Cmdline::parse("root=").root, None);
    }

    #[test]
    fn quotes_and_dashes() {
        let (p, rest) = tokenize(r#"a="x y" "b=1 2" c   -- single -v x=y"#);
        assert_eq!(p, vec![("a".into(), Some("x y".into())), ("b".into(), Some("1 2".into())), ("c".into(), None)]);
        assert_eq!(rest, vec!["single", "-v", "x=y"]);
        let c = Cmdline::parse("root=LABEL=\"my root\" -- emergency");
        assert_eq!(c.root, Some(RootSpec::Label("my root".into())));
        assert_eq!(c.init_args, vec!["emergency"]);
        assert_eq!(tokenize("   \n").0, vec![]);
    }

    #[test]
    fn argv_file() {
        assert_eq!(parse_argv_file("/bin/sh\n-c\necho hi there\n"), Some(vec!["/bin/sh".into(), "-c".into(), "echo hi there".into()]));
        assert_eq!(parse_argv_file("/app\n\n"), Some(vec!["/app".into(), "".into()]));
        assert_eq!(parse_argv_file(""), None);
        assert_eq!(parse_argv_file("\n"), None);
        assert_eq!(parse_argv_file("/x"), Some(vec!["/x".into()]));
    }
}
