//! Identities derived as systemd-repart derives them:
//! `HMAC-SHA256(key = seed, message = purpose string)`. The builder's plan
//! keys them with the recipe digest; a writer derives its internal
//! identities (btrfs chunk-tree and device UUIDs) from
//! [`FsParams::seed`](crate::fs::FsParams::seed).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// HMAC-SHA256(seed, purpose) → a v4 UUID, as systemd-repart derives its UUIDs.
pub fn derive_uuid(seed: &[u8; 32], purpose: &str) -> Uuid {
    let mut b = derive_bytes(seed, purpose);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b16(&b))
}

/// 32 bytes of HMAC-SHA256(seed, purpose), for serials and hash seeds.
pub fn derive_bytes(seed: &[u8; 32], purpose: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn b16(b: &[u8; 32]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_purpose_bound() {
        let seed = [7u8; 32];
        let a = derive_uuid(&seed, "disk-guid");
        assert_eq!(a, derive_uuid(&seed, "disk-guid"));
        assert_ne!(a, derive_uuid(&seed, "partition-guid:1:ESP"));
        assert_eq!(a.get_version_num(), 4);
    }
}
