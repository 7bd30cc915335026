//! DHCP server replies from arbitrary fields: a BOOTREPLY header for the
//! client's transaction and MAC (mostly), the magic cookie, then options
//! the client reads (with right or wrong lengths) and any others.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Arbitrary;
use guest_agent::net::apply::NetOps;

pub const XID: u32 = 0x1234_5678;
pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// Option codes the client reads.
const KNOWN: [u8; 12] = [1, 3, 6, 12, 26, 50, 51, 53, 54, 58, 59, 255];

#[derive(Arbitrary, Debug, Clone)]
pub enum Opt {
    /// A code the client reads, value of any length.
    Known {
        code: u8,
        value: Vec<u8>,
    },
    /// A code the client reads with its usual length (4 for addresses and
    /// times, 1 for the type, 2 for the MTU).
    Sized {
        code: u8,
        value: [u8; 4],
    },
    /// Any code and value.
    Any {
        code: u8,
        value: Vec<u8>,
    },
    /// A length byte that runs past the end.
    Truncated {
        code: u8,
        len: u8,
    },
    Pad,
    End,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Packet {
    pub op_reply: bool,
    pub own_xid: bool,
    pub own_mac: bool,
    pub cookie: bool,
    pub msg_type: u8,
    pub yiaddr: [u8; 4],
    /// Header bytes 8..16 and 20..28 (secs, flags, ciaddr, siaddr, giaddr).
    pub misc: [u8; 16],
    pub options: Vec<Opt>,
    /// Bytes after the options (padding, junk).
    pub tail: Vec<u8>,
    pub cut: Option<u16>,
}

impl Packet {
    pub fn bytes(&self, xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = if self.op_reply { 2 } else { 1 };
        p[1] = 1;
        p[2] = 6;
        let x = if self.own_xid { xid } else { xid ^ 1 };
        p[4..8].copy_from_slice(&x.to_be_bytes());
        p[8..16].copy_from_slice(&self.misc[..8]);
        p[16..20].copy_from_slice(&self.yiaddr);
        p[20..28].copy_from_slice(&self.misc[8..]);
        let mac = if self.own_mac { MAC } else { [0xff; 6] };
        p[28..34].copy_from_slice(&mac);
        p.extend_from_slice(if self.cookie { &[99, 130, 83, 99] } else { &[99, 130, 83, 98] });
        p.extend_from_slice(&[53, 1, self.msg_type]);
        for o in &self.options {
            match o {
                Opt::Known { code, value } => {
                    p.push(KNOWN[*code as usize % KNOWN.len()]);
                    p.push(value.len().min(255) as u8);
                    p.extend(value.iter().take(255));
                }
                Opt::Sized { code, value } => {
                    let c = KNOWN[*code as usize % KNOWN.len()];
                    let n = match c {
                        53 => 1,
                        26 => 2,
                        _ => 4,
                    };
                    p.push(c);
                    p.push(n as u8);
                    p.extend_from_slice(&value[..n]);
                }
                Opt::Any { code, value } => {
                    p.push(*code);
                    p.push(value.len().min(255) as u8);
                    p.extend(value.iter().take(255));
                }
                Opt::Truncated { code, len } => {
                    p.push(*code);
                    p.push(*len);
                }
                Opt::Pad => p.push(0),
                Opt::End => p.push(255),
            }
        }
        p.extend_from_slice(&self.tail);
        if let Some(c) = self.cut {
            p.truncate(c as usize);
        }
        p.truncate(1500);
        p
    }
}

/// What a configuration step asked of the machine.
#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Vec<String>,
    /// Make the n-th call fail (as a kernel that refuses).
    pub fail_at: Option<usize>,
}

impl Recorder {
    fn call(&mut self, s: String) -> io::Result<()> {
        let n = self.calls.len();
        self.calls.push(s);
        if self.fail_at == Some(n) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }
}

impl NetOps for Recorder {
    fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        self.call(format!("link {index} up mtu {mtu:?}"))
    }
    fn add_address_for(&mut self, index: u32, addr: IpAddr, prefix: u8, secs: u32) -> io::Result<()> {
        let max = if addr.is_ipv6() { 128 } else { 32 };
        assert!(prefix <= max, "address {addr}/{prefix} with a prefix longer than the address");
        self.call(format!("addr {addr}/{prefix} on {index} for {secs}"))
    }
    fn add_route(&mut self, index: u32, dest: IpAddr, prefix: u8, gateway: Option<IpAddr>) -> io::Result<()> {
        let max = if dest.is_ipv6() { 128 } else { 32 };
        assert!(prefix <= max, "route {dest}/{prefix} with a prefix longer than the address");
        if let Some(g) = gateway {
            assert_eq!(g.is_ipv6(), dest.is_ipv6(), "route {dest}/{prefix} via {g}: families differ");
        }
        self.call(format!("route {dest}/{prefix} via {gateway:?} on {index}"))
    }
    fn accept_ra(&mut self, ifname: &str) {
        self.calls.push(format!("accept_ra {ifname}"));
    }
}

pub fn ip4(b: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(b)
}
