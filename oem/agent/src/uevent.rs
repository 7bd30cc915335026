//! `/sys/class/block/<dev>/uevent` parsing: pure.

/// The fields of a block device's `uevent` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockUevent {
    pub major: u32,
    pub minor: u32,
    /// Name under `/dev` (`vda2`, `nvme0n1p2`, `mapper/…` would be `dm-0`).
    pub devname: String,
    /// `disk` or `partition`.
    pub devtype: String,
    /// Partition number, for partitions.
    pub partn: Option<u32>,
    /// GPT partition name, when the kernel exports it.
    pub partname: Option<String>,
    /// Only some kernels export `PARTUUID`; lower case.
    pub partuuid: Option<String>,
}

impl BlockUevent {
    pub fn is_partition(&self) -> bool {
        self.devtype == "partition"
    }
}

/// Parse the `KEY=VALUE` lines; `None` without MAJOR, MINOR and DEVNAME.
pub fn parse(s: &str) -> Option<BlockUevent> {
    let mut u = BlockUevent::default();
    let (mut maj, mut min) = (None, None);
    for line in s.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k {
            "MAJOR" => maj = v.parse().ok(),
            "MINOR" => min = v.parse().ok(),
            "DEVNAME" => u.devname = v.to_string(),
            "DEVTYPE" => u.devtype = v.to_string(),
            "PARTN" => u.partn = v.parse().ok(),
            "PARTNAME" => u.partname = Some(v.to_string()),
            "PARTUUID" => u.partuuid = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    u.major = maj?;
    u.minor = min?;
    if u.devname.is_empty() {
        return None;
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition() {
        let u = parse("MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=root\n").unwrap();
        assert_eq!((u.major, u.minor, u.devname.as_str(), u.partn), (254, 2, "vda2", Some(2)));
        assert!(u.is_partition());
        assert_eq!(u.partname.as_deref(), Some("root"));
        assert_eq!(u.partuuid, None);
    }

    #[test]
    fn disk_and_garbage() {
        let u = parse("MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\nPARTUUID=ABC\n").unwrap();
        assert!(!u.is_partition());
        assert_eq!(u.partuuid.as_deref(), Some("abc"));
        assert_eq!(parse("DEVNAME=x\n"), None);
        assert_eq!(parse("MAJOR=a\nMINOR=1\nDEVNAME=x"), None);
        assert_eq!(parse("MAJOR=1\nMINOR=1\n"), None);
    }
}
