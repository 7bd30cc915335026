//! A small DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK, over
//! a UDP socket on port 68 bound to the interface (`SO_BINDTODEVICE`) that
//! broadcasts, with the BROADCAST flag set so that the server's replies reach
//! an interface that has no address yet. Renewal (T1 unicast, T2 broadcast,
//! expiry) is [`super::lease`]; its REQUESTs are [`build_bound_request`].
//!
//! [`build`] and [`parse`] are pure and unit-tested; [`run`] does the I/O.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_MTU: u8 = 26;
const OPT_REQ_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;
const OPT_END: u8 = 255;

/// A client message: DISCOVER, or REQUEST for `requested` from `server`.
pub fn build(msg_type: u8, xid: u32, mac: &[u8; 6], requested: Option<Ipv4Addr>, server: Option<Ipv4Addr>) -> Vec<u8> {
    build_with(msg_type, xid, mac, None, requested, server)
}

/// A REQUEST from a client that holds `ciaddr` (RENEWING, REBINDING; RFC 2131
/// table 5): `ciaddr` filled in, no requested-address or server-id option,
/// no BROADCAST flag (the client can receive unicast).
pub fn build_bound_request(xid: u32, mac: &[u8; 6], ciaddr: Ipv4Addr) -> Vec<u8> {
    build_with(REQUEST, xid, mac, Some(ciaddr), None, None)
}

fn build_with(
    msg_type: u8,
    xid: u32,
    mac: &[u8; 6],
    ciaddr: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    match ciaddr {
        Some(a) => p[12..16].copy_from_slice(&a.octets()),
        None => p[10..12].copy_from_slice(&0x8000u16.to_be_bytes()), // BROADCAST
    }
    p[28..34].copy_from_slice(mac);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[OPT_MSG_TYPE, 1, msg_type]);
    if let Some(ip) = requested {
        p.push(OPT_REQ_IP);
        p.push(4);
        p.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server {
        p.push(OPT_SERVER_ID);
        p.push(4);
        p.extend_from_slice(&ip.octets());
    }
    p.extend_from_slice(&[OPT_PARAMS, 5, OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_MTU]);
    p.push(OPT_END);
    // Some servers drop BOOTP messages shorter than 300 bytes.
    p.resize(p.len().max(300), 0);
    p
}

/// What a server's OFFER/ACK/NAK says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg_type: u8,
    pub yiaddr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    /// Options 58 and 59: when to renew (T1) and rebind (T2), in seconds
    /// from the start of the lease.
    pub renew_secs: Option<u32>,
    pub rebind_secs: Option<u32>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// Options left out, each with its byte offset ([`check`]).
    pub warnings: Vec<String>,
}

fn addrs(v: &[u8]) -> Vec<Ipv4Addr> {
    v.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect()
}

/// Parse a server reply for transaction `xid` and client `mac`; `None` if it
/// is not one (another client's, malformed, not a BOOTREPLY). [`check`]
/// says why a reply for us was refused.
pub fn parse(p: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    check(p, xid, mac).ok().flatten()
}

fn option_name(code: u8) -> &'static str {
    match code {
        OPT_MASK => "subnet mask",
        OPT_ROUTER => "router",
        OPT_DNS => "DNS servers",
        OPT_HOSTNAME => "host name",
        OPT_MTU => "interface MTU",
        OPT_LEASE => "lease time",
        OPT_MSG_TYPE => "message type",
        OPT_SERVER_ID => "server identifier",
        OPT_T1 => "renewal time",
        OPT_T2 => "rebinding time",
        _ => "option",
    }
}

/// A server reply for transaction `xid` and client `mac`:
/// - `Ok(None)`: not for us (not a BOOTREPLY, another transaction or
///   client); nothing to say;
/// - `Err(why)`: for us but unusable (cut short, no magic cookie, an
///   option running past the end, no message type, a lease time of 0, an
///   address that cannot be a host's), `why` naming the byte offset;
/// - `Ok(Some(reply))`: usable; options of the wrong length or value (a
///   mask that is not contiguous, an MTU below 68, routers not in fours)
///   are left out, as systemd-networkd leaves them out, and listed in
///   `reply.warnings` with their offsets.
pub fn check(p: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Option<Reply>, String> {
    if p.len() < 34 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || &p[28..34] != mac {
        return Ok(None);
    }
    if p.len() < 240 {
        return Err(format!("cut short: {} bytes, the header and magic cookie take 240", p.len()));
    }
    if p[236..240] != MAGIC {
        return Err(format!("no DHCP magic cookie at byte 236 (found {:02x?})", &p[236..240]));
    }
    let mut r = Reply {
        msg_type: 0,
        yiaddr: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        server: None,
        mask: None,
        routers: Vec::new(),
        dns: Vec::new(),
        lease_secs: None,
        renew_secs: None,
        rebind_secs: None,
        hostname: None,
        mtu: None,
        warnings: Vec::new(),
    };
    let mut i = 240;
    while i < p.len() {
        let code = p[i];
        if code == OPT_END {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let Some(&len) = p.get(i + 1) else {
            return Err(format!("option {code} at byte {i} has no length byte (the message ends)"));
        };
        let len = len as usize;
        let Some(v) = p.get(i + 2..i + 2 + len) else {
            return Err(format!(
                "option {code} ({}) at byte {i}: length {len} runs past the end of the {}-byte message",
                option_name(code),
                p.len()
            ));
        };
        let want = match code {
            OPT_MSG_TYPE => Some(1),
            OPT_MTU => Some(2),
            OPT_MASK | OPT_SERVER_ID | OPT_LEASE | OPT_T1 | OPT_T2 => Some(4),
            _ => None,
        };
        let be32 = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        if want.is_some_and(|w| w != len) {
            if code == OPT_MSG_TYPE {
                return Err(format!("option 53 (message type) at byte {i} has length {len}, not 1"));
            }
            r.warnings.push(format!(
                "option {code} ({}) at byte {i} has length {len}, not {}; left out",
                option_name(code),
                want.unwrap_or(0)
            ));
        } else {
            match code {
                OPT_MSG_TYPE => r.msg_type = v[0],
                OPT_SERVER_ID => r.server = addrs(v).first().copied(),
                OPT_MASK => {
                    let m = be32(v);
                    if m.leading_ones() + m.trailing_zeros() == 32 {
                        r.mask = Some(Ipv4Addr::from(m));
                    } else {
                        r.warnings
                            .push(format!("option 1 (subnet mask) at byte {i}: {} is not a contiguous mask; left out", Ipv4Addr::from(m)));
                    }
                }
                OPT_ROUTER | OPT_DNS if len == 0 || len % 4 != 0 => r
                    .warnings
                    .push(format!("option {code} ({}) at byte {i} has length {len}, not a multiple of 4; left out", option_name(code))),
                OPT_ROUTER => r.routers = addrs(v),
                OPT_DNS => r.dns = addrs(v),
                OPT_LEASE if be32(v) == 0 => return Err(format!("option 51 (lease time) at byte {i} is 0 seconds")),
                OPT_LEASE => r.lease_secs = Some(be32(v)),
                OPT_T1 => r.renew_secs = Some(be32(v)),
                OPT_T2 => r.rebind_secs = Some(be32(v)),
                OPT_HOSTNAME => r.hostname = Some(String::from_utf8_lossy(v).into_owned()),
                OPT_MTU if u16::from_be_bytes([v[0], v[1]]) < 68 => r.warnings.push(format!(
                    "option 26 (interface MTU) at byte {i}: {} is below the minimum of 68; left out",
                    u16::from_be_bytes([v[0], v[1]])
                )),
                OPT_MTU => r.mtu = Some(u16::from_be_bytes([v[0], v[1]])),
                _ => {}
            }
        }
        i += 2 + len;
    }
    if r.msg_type == 0 {
        return Err("no message type (option 53)".into());
    }
    let y = r.yiaddr;
    if matches!(r.msg_type, OFFER | ACK) && (y.is_unspecified() || y.is_broadcast() || y.is_multicast() || y.is_loopback()) {
        return Err(format!("yiaddr (byte 16) {y} cannot be this host's address"));
    }
    Ok(Some(r))
}

/// A transaction id from the clock and the MAC (no randomness source needed).
pub fn xid_for(mac: &[u8; 6]) -> u32 {
    let t = crate::uptime();
    let nanos = (t.fract() * 1e9) as u32;
    nanos ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]).rotate_left(7)
}

/// A UDP socket on port 68 of `ifname` only: `SO_BINDTODEVICE` (and
/// `SO_REUSEADDR`) before `bind`, so that clients on different interfaces
/// can each have one.
pub fn socket_on(ifname: &str) -> io::Result<UdpSocket> {
    // SAFETY: socket(2) has no memory arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let s = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let name = ifname.as_bytes();
    // SAFETY: setsockopt with pointer/length pairs into `one` and `name`,
    // which outlive the calls.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) | libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, name.as_ptr().cast(), name.len() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 68u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: bind with a pointer to a sockaddr_in and its size.
    if unsafe {
        libc::bind(s.as_raw_fd(), (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    s.set_broadcast(true)?;
    Ok(s)
}

/// Bad replies logged per exchange at most: a server that floods them
/// costs log lines only up to this.
const MAX_LOGGED_BAD: u32 = 8;

/// Wait for a reply of one of `types` until `deadline`. A reply for us
/// that is refused or has options left out is logged with the server's
/// address and the byte offsets (`ifname` for the log).
fn await_reply(s: &UdpSocket, ifname: &str, xid: u32, mac: &[u8; 6], types: &[u8], deadline: Instant) -> io::Result<Option<Reply>> {
    let mut buf = [0u8; 1500];
    let mut bad = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        s.set_read_timeout(Some(left))?;
        match s.recv_from(&mut buf) {
            Ok((n, from)) => match check(&buf[..n], xid, mac) {
                Ok(Some(r)) if types.contains(&r.msg_type) => {
                    for w in &r.warnings {
                        crate::log!("dhcp {ifname}: reply from {from}: {w}");
                    }
                    return Ok(Some(r));
                }
                Ok(_) => {}
                Err(why) => {
                    bad += 1;
                    if bad <= MAX_LOGGED_BAD {
                        crate::log!("dhcp {ifname}: reply from {from} ignored: {why}");
                    } else if bad == MAX_LOGGED_BAD + 1 {
                        crate::log!("dhcp {ifname}: more bad replies from {from} and others, not logged");
                    }
                }
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Obtain a lease on `ifname` (which must be up): DISCOVER/OFFER then
/// REQUEST/ACK, each retried with growing waits, `total` at most.
pub fn run(ifname: &str, mac: &[u8; 6], total: Duration) -> Result<Reply, String> {
    let s = socket_on(ifname).map_err(|e| format!("DHCP socket on {ifname}: {e}"))?;
    let start = Instant::now();
    let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut wait = Duration::from_millis(500);
    let mut attempt = 0;
    while start.elapsed() < total {
        attempt += 1;
        let xid = xid_for(mac).wrapping_add(attempt);
        let step_end = |w: Duration| (Instant::now() + w).min(start + total);
        s.send_to(&build(DISCOVER, xid, mac, None, None), bcast).map_err(|e| format!("sending DHCPDISCOVER on {ifname}: {e}"))?;
        let offer = match await_reply(&s, ifname, xid, mac, &[OFFER], step_end(wait)).map_err(|e| format!("receiving on {ifname}: {e}"))? {
            Some(o) => o,
            None => {
                crate::debug!("dhcp {ifname}: no offer within {wait:?} (attempt {attempt})");
                wait = (wait * 2).min(Duration::from_secs(4));
                continue;
            }
        };
        s.send_to(&build(REQUEST, xid, mac, Some(offer.yiaddr), offer.server), bcast)
            .map_err(|e| format!("sending DHCPREQUEST on {ifname}: {e}"))?;
        match await_reply(&s, ifname, xid, mac, &[ACK, NAK], step_end(wait.max(Duration::from_secs(2))))
            .map_err(|e| format!("receiving on {ifname}: {e}"))?
        {
            Some(r) if r.msg_type == ACK => return Ok(r),
            Some(_) => crate::log!("dhcp {ifname}: NAK for {}, starting over", offer.yiaddr),
            None => crate::debug!("dhcp {ifname}: no ACK (attempt {attempt})"),
        }
    }
    Err(format!("no DHCP lease on {ifname} after {attempt} attempts in {:.1} s", start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server reply as qemu's slirp builds it.
    fn reply(msg_type: u8, xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p[28..34].copy_from_slice(&MAC);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, msg_type, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 0, 3, 4, 10, 0, 2, 2]);
        p.extend_from_slice(&[6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 51, 4, 0, 1, 81, 128, 26, 2, 5, 220, 12, 3, b'v', b'm', b'1', 255]);
        p.resize(548, 0);
        p
    }

    #[test]
    fn discover_and_request_layout() {
        let d = build(DISCOVER, 0xdead_beef, &MAC, None, None);
        assert_eq!(d.len(), 300);
        assert_eq!((d[0], d[1], d[2]), (1, 1, 6));
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, 1]);
        let r = build(REQUEST, 7, &MAC, Some(Ipv4Addr::new(10, 0, 2, 15)), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(&r[240..253], &[53, 1, 3, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0]);
        assert_eq!(&r[12..16], &[0; 4], "no ciaddr before the lease");
    }

    #[test]
    fn renewal_request_layout() {
        let r = build_bound_request(9, &MAC, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r[0], 1);
        assert_eq!(&r[10..12], &[0, 0], "no BROADCAST flag");
        assert_eq!(&r[12..16], &[10, 0, 2, 15], "ciaddr");
        assert_eq!(&r[16..20], &[0; 4], "yiaddr");
        // Message type REQUEST, then straight to the parameter list: no
        // requested address (50), no server id (54).
        assert_eq!(&r[240..245], &[53, 1, 3, 55, 5]);
    }

    #[test]
    fn parses_t1_t2() {
        let mut p = reply(ACK, 42);
        let end = p.iter().rposition(|&b| b == 255).unwrap();
        p.splice(end..end, [58, 4, 0, 0, 0, 30, 59, 4, 0, 0, 0, 50]);
        let r = parse(&p, 42, &MAC).unwrap();
        assert_eq!((r.renew_secs, r.rebind_secs), (Some(30), Some(50)));
    }

    #[test]
    fn parses_an_ack() {
        let r = parse(&reply(ACK, 42), 42, &MAC).unwrap();
        assert_eq!(r.msg_type, ACK);
        assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(r.routers, [Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(r.dns, [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(r.lease_secs, Some(86400));
        assert_eq!((r.renew_secs, r.rebind_secs), (None, None));
        assert_eq!(r.mtu, Some(1500));
        assert_eq!(r.hostname.as_deref(), Some("vm1"));
    }

    #[test]
    fn ignores_foreign_and_broken_replies() {
        assert_eq!(parse(&reply(ACK, 42), 43, &MAC), None, "other xid");
        assert_eq!(parse(&reply(ACK, 42), 42, &[0; 6]), None, "other client");
        assert_eq!(parse(&reply(ACK, 42)[..200], 42, &MAC), None, "short");
        let mut p = reply(ACK, 42);
        p[0] = 1;
        assert_eq!(parse(&p, 42, &MAC), None, "a request");
        // An option running past the end.
        let mut p = reply(OFFER, 42);
        p.truncate(240);
        p.extend_from_slice(&[53, 1, 2, 6, 200, 1]);
        assert_eq!(parse(&p, 42, &MAC), None);
        // No message type: not DHCP.
        let mut p = reply(OFFER, 42);
        p.truncate(240);
        p.push(255);
        assert_eq!(parse(&p, 42, &MAC), None);
    }

    /// `reply(OFFER)` with its options replaced by `opts` (then END).
    fn offer_with(opts: &[u8]) -> Vec<u8> {
        let mut p = reply(OFFER, 42);
        p.truncate(240);
        p.extend_from_slice(opts);
        p.push(255);
        p
    }

    #[test]
    fn refused_replies_say_why_and_where() {
        let e = |p: &[u8]| check(p, 42, &MAC).unwrap_err();
        assert_eq!(check(&reply(ACK, 42), 43, &MAC), Ok(None), "another transaction: not ours, nothing to say");
        assert_eq!(e(&reply(ACK, 42)[..200]), "cut short: 200 bytes, the header and magic cookie take 240");
        let mut p = reply(ACK, 42);
        p[236] = 0;
        assert!(e(&p).starts_with("no DHCP magic cookie at byte 236"), "{}", e(&p));
        assert_eq!(
            e(&offer_with(&[53, 1, 2, 6, 200, 1])),
            "option 6 (DNS servers) at byte 243: length 200 runs past the end of the 247-byte message"
        );
        assert_eq!(e(&offer_with(&[53, 1, 2, 12])[..244]), "option 12 at byte 243 has no length byte (the message ends)");
        assert_eq!(e(&offer_with(&[1, 4, 255, 255, 255, 0])), "no message type (option 53)");
        assert_eq!(e(&offer_with(&[53, 2, 2, 2])), "option 53 (message type) at byte 240 has length 2, not 1");
        assert_eq!(e(&offer_with(&[53, 1, 2, 51, 4, 0, 0, 0, 0])), "option 51 (lease time) at byte 243 is 0 seconds");
        for y in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1]] {
            let mut p = offer_with(&[53, 1, 2]);
            p[16..20].copy_from_slice(&y);
            assert!(e(&p).ends_with("cannot be this host's address"), "{y:?}: {}", e(&p));
        }
    }

    #[test]
    fn bad_options_are_left_out_with_their_offsets() {
        let p = offer_with(&[53, 1, 2, 1, 4, 255, 0, 255, 0, 3, 3, 10, 0, 2, 26, 2, 0, 20, 54, 3, 1, 2, 3, 6, 4, 10, 0, 2, 3]);
        let r = check(&p, 42, &MAC).unwrap().unwrap();
        assert_eq!((r.mask, r.routers.len(), r.mtu, r.server), (None, 0, None, None));
        assert_eq!(r.dns, [Ipv4Addr::new(10, 0, 2, 3)], "the good option is kept");
        assert_eq!(
            r.warnings,
            [
                "option 1 (subnet mask) at byte 243: 255.0.255.0 is not a contiguous mask; left out",
                "option 3 (router) at byte 249 has length 3, not a multiple of 4; left out",
                "option 26 (interface MTU) at byte 254: 20 is below the minimum of 68; left out",
                "option 54 (server identifier) at byte 258 has length 3, not 4; left out",
            ]
        );
        assert!(check(&reply(ACK, 42), 42, &MAC).unwrap().unwrap().warnings.is_empty(), "slirp's reply is clean");
    }
}
