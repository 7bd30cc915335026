//! rtnetlink requests (link up/MTU, addresses, routes), built with
//! `netlink-packet-route` and sent over a blocking `netlink-sys` socket; each
//! request asks for an ACK and waits for it.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn family(a: &IpAddr) -> AddressFamily {
    if a.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        hdr.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut rx = Vec::with_capacity(8192);
        loop {
            rx.clear();
            self.sock.recv(&mut rx, 0)?;
            let mut off = 0;
            while off < rx.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = reply.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Set the MTU (if given) and bring the link up.
    pub fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Add (or replace) `addr/prefix` on the link, for good.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.add_address_for(index, addr, prefix, u32::MAX)
    }

    /// Add (or replace, which refreshes the lifetime) `addr/prefix` on the
    /// link, valid and preferred for `secs` seconds (`u32::MAX`: forever):
    /// the kernel removes it when that runs out.
    pub fn add_address_for(&mut self, index: u32, addr: IpAddr, prefix: u8, secs: u32) -> io::Result<()> {
        let mut m = Self::address(index, addr, prefix);
        if secs != u32::MAX {
            let mut ci = CacheInfo::default();
            ci.ifa_preferred = secs;
            ci.ifa_valid = secs;
            m.attributes.push(AddressAttribute::CacheInfo(ci));
        }
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Remove `addr/prefix` from the link (with the routes that need it).
    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelAddress(Self::address(index, addr, prefix)), 0)
    }

    fn address(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family(&addr);
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        if let IpAddr::V4(a) = addr {
            if prefix < 31 {
                let host_bits = u32::MAX.checked_shr(prefix as u32).unwrap_or(0);
                m.attributes.push(AddressAttribute::Broadcast((u32::from(a) | host_bits).into()));
            }
        }
        m
    }

    /// Add (or replace) the route `dest/prefix` via `gateway` (or on-link
    /// when `gateway` is `None`) out of the link.
    pub fn add_route(&mut self, index: u32, dest: IpAddr, prefix: u8, gateway: Option<IpAddr>) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(&dest);
        m.header.destination_prefix_length = prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        m.header.kind = RouteType::Unicast;
        if prefix > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dest)));
        }
        if let Some(g) = gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
    }
}
