//! Keeping a DHCP lease (`net::lease::maintain`: renew at T1, rebind at T2,
//! expire, NAK) fed arbitrary replies at arbitrary times: a fake clock, a
//! scripted server in place of the UDP socket, and a recorder in place of
//! rtnetlink. The state machine must end (expired, NAK, a lease without
//! end, or the script's end) and never schedule into the past.
#![no_main]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use build_image_fuzz::dhcp::{ip4, Packet, MAC};
use guest_agent::net::dhcp::{Reply, ACK};
use guest_agent::net::lease::{maintain, Clock, Endpoints, Host, Wire, MIN_RETRY};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Event {
    /// Seconds the reply takes to come (at most until the deadline).
    delay: u32,
    /// Answer the client's transaction id (else whatever the packet says).
    answer: bool,
    packet: Packet,
}

#[derive(Arbitrary, Debug)]
struct Input {
    yiaddr: [u8; 4],
    server: Option<[u8; 4]>,
    lease: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
    start: u32,
    events: Vec<Event>,
}

struct FakeClock(Rc<Cell<Duration>>);

impl Clock for FakeClock {
    fn now(&mut self) -> Duration {
        self.0.get()
    }
    fn sleep_until(&mut self, t: Duration) {
        assert!(t > self.0.get(), "a wait until {t:?} at {:?}: the loop would spin", self.0.get());
        self.0.set(t);
    }
    fn reply_wait(&mut self, deadline: Duration) -> Duration {
        deadline.saturating_sub(self.0.get())
    }
    fn timed_out(&mut self, deadline: Duration) {
        self.0.set(self.0.get().max(deadline));
    }
}

struct Script {
    now: Rc<Cell<Duration>>,
    events: RefCell<VecDeque<Event>>,
    xid: Cell<u32>,
    sent: Cell<usize>,
}

impl Wire for Script {
    fn send_to(&self, buf: &[u8], _: SocketAddrV4) -> io::Result<usize> {
        assert!(buf.len() >= 240 && buf[0] == 1, "the client sent no BOOTREQUEST");
        self.xid.set(u32::from_be_bytes(buf[4..8].try_into().unwrap()));
        self.sent.set(self.sent.get() + 1);
        Ok(buf.len())
    }
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        assert!(!wait.is_zero());
        let Some(e) = self.events.borrow_mut().pop_front() else {
            // Silence: the clock jumps to the deadline.
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let d = Duration::from_secs(e.delay as u64);
        if d >= wait {
            self.now.set(self.now.get() + wait);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.now.set(self.now.get() + d);
        let xid = if e.answer { self.xid.get() } else { 0 };
        let p = e.packet.bytes(xid);
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }
}

#[derive(Default)]
struct Rec {
    events: usize,
}

impl Host for Rec {
    fn bound(&mut self, r: &Reply, remaining: Duration, _previous: Option<Ipv4Addr>) -> Result<(), String> {
        if remaining != Duration::MAX {
            assert!(remaining <= Duration::from_secs(u32::MAX as u64), "{remaining:?} left of {:?}", r.lease_secs);
        }
        self.events += 1;
        Ok(())
    }
    fn lost(&mut self, _: Ipv4Addr, _: &str) {
        self.events += 1;
    }
    fn stop(&self) -> bool {
        self.events > 10_000
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(i) = Input::arbitrary(&mut u) else { return };
    let lease = Reply {
        msg_type: ACK,
        yiaddr: ip4(i.yiaddr),
        server: i.server.map(ip4),
        mask: None,
        routers: Vec::new(),
        dns: Vec::new(),
        lease_secs: i.lease,
        renew_secs: i.t1,
        rebind_secs: i.t2,
        hostname: None,
        mtu: None,
        warnings: Vec::new(),
    };
    let start = Duration::from_secs(i.start as u64);
    let now = Rc::new(Cell::new(start));
    let n_events = i.events.len();
    let script = Script { now: now.clone(), events: RefCell::new(i.events.into()), xid: Cell::new(0), sent: Cell::new(0) };
    let ep = Endpoints { sock: script, mac: MAC, server_port: 67, broadcast: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67) };
    let mut clock = FakeClock(now);
    let mut host = Rec::default();
    let _ = maintain("fuzz0", &ep, lease, start, MIN_RETRY, &mut clock, &mut host);
    // Each REQUEST waits for one reply at least; between replies, a lease
    // is asked for a bounded number of times (halving down to MIN_RETRY).
    assert!(ep.sock.sent.get() <= 200 * (n_events + 1), "{} REQUESTs for {n_events} replies", ep.sock.sent.get());
});
