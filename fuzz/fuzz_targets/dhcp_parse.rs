//! A DHCP server's reply (OFFER/ACK/NAK) as the agent's client reads it
//! (`net::dhcp::parse`), then what the agent makes of a lease: its timers
//! (`lease::Timers::from_reply`) and the address, MTU and routes it puts on
//! the interface (`apply::configure_lease`, into a recorder).
//!
//! Input: first byte odd: a structured reply (valid header, arbitrary
//! options); even: the rest is the datagram as it came off the wire.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use build_image_fuzz::dhcp::{Packet, Recorder, MAC, XID};
use guest_agent::net::apply::{configure_lease, Iface};
use guest_agent::net::{dhcp, lease};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let (p, mtu, secs, fail_at) = if mode & 1 == 1 {
        let mut u = Unstructured::new(rest);
        let Ok(pk) = Packet::arbitrary(&mut u) else { return };
        let mtu: Option<u32> = u.arbitrary().unwrap_or(None);
        (pk.bytes(XID), mtu, u.arbitrary::<u32>().unwrap_or(u32::MAX), u.arbitrary::<Option<u8>>().unwrap_or(None))
    } else {
        (rest.to_vec(), None, u32::MAX, None)
    };
    let Some(r) = dhcp::parse(&p, XID, &MAC) else { return };
    if let Some(t) = lease::Timers::from_reply(&r) {
        assert!(!t.t1.is_zero() && t.t1 < t.t2 && t.t2 < t.lease, "{t:?} from {r:?}");
    }
    let iface = Iface { name: "eth0".into(), index: 2, mac: Some(MAC), ether: true };
    let mut rec = Recorder { fail_at: fail_at.map(usize::from), ..Recorder::default() };
    let mut default_route = false;
    let _ = configure_lease(&mut rec, &iface, &r, mtu, secs, &mut default_route);
});
