//! Keeping a DHCPv4 lease (RFC 2131 §4.4.5): renew at T1 with a REQUEST
//! unicast to the server that granted the lease, rebind at T2 with a
//! broadcast REQUEST to any server, and when the lease ends without an ACK
//! (or on a NAK) stop using the address and start over with DISCOVER.
//!
//! * [`Timers`] and [`Renewer`] are the pure state machine: which phase a
//!   lease is in at a given time and when the next REQUEST goes out
//!   (half the time left to T2, or to the end of the lease, but at least
//!   [`MIN_RETRY`], and never past the phase's end).
//! * [`maintain`] drives it with a [`Clock`] (real: `CLOCK_BOOTTIME`, which
//!   keeps counting while the VM is suspended, as a lease does) and a
//!   [`Host`] that changes the machine (real: rtnetlink). The unit tests use
//!   a fake clock and a real UDP exchange with a test server on loopback.
//! * Every leased address carries the lease as its kernel lifetime
//!   (`valid_lft`/`preferred_lft`, refreshed on each renewal), so the kernel
//!   drops it at the end of the lease even when nothing renews it.
//! * [`held`] records the leases [`super::apply`] configured; [`start`]
//!   keeps each in a thread once the appliance runs (the agent stays PID 1).
//!   After a switch to a root the agent is gone. With the OEM key
//!   `keep_leases: true`, [`keep_after_switch`] leaves a child process
//!   (`agent-dhcp`) that goes on renewing the leases under the root's init,
//!   for roots without a DHCP client of their own; otherwise [`handover`]
//!   logs when each address expires, and the root's own client
//!   (systemd-networkd, dhclient, udhcpc …) must take it over.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use super::apply::{configure_lease, Iface};
use super::dhcp::{self, Reply, ACK, NAK};
use super::netlink::Rtnl;
use crate::log;

/// RFC 2131 §4.4.5: a client waits one-half of the remaining time to T2 (or
/// to the end of the lease), down to a minimum of 60 seconds, before it
/// retransmits a REQUEST.
pub const MIN_RETRY: Duration = Duration::from_secs(60);

/// A lease's timers, as offsets from its start (when the REQUEST that got
/// the ACK was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub lease: Duration,
}

impl Timers {
    /// From an ACK: option 51, with 58/59 when they are consistent
    /// (0 < T1 < T2 < lease), else the defaults 0.5 and 0.875 × lease.
    /// `None` for an infinite lease (0xffffffff) or an ACK without a lease
    /// time: nothing to renew.
    pub fn from_reply(r: &Reply) -> Option<Timers> {
        let lease = r.lease_secs.filter(|&l| l != u32::MAX && l > 0)?;
        let l = lease as u64 * 1000;
        let ms = |s: Option<u32>| s.map(|s| s as u64 * 1000);
        let (mut t1, mut t2) = (l / 2, l * 7 / 8);
        match (ms(r.renew_secs), ms(r.rebind_secs)) {
            (Some(a), Some(b)) if 0 < a && a < b && b < l => (t1, t2) = (a, b),
            (Some(a), None) if 0 < a && a < t2 => t1 = a,
            (None, Some(b)) if t1 < b && b < l => t2 = b,
            _ => {}
        }
        Some(Timers { t1: Duration::from_millis(t1), t2: Duration::from_millis(t2), lease: Duration::from_millis(l) })
    }
}

/// Where a lease is at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before T1.
    Bound,
    /// T1 ≤ t < T2: REQUESTs go to the server that granted the lease.
    Renewing,
    /// T2 ≤ t < end: REQUESTs are broadcast to any server.
    Rebinding,
    /// The lease is over: the address must not be used any more.
    Expired,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until then (a clock time).
    WaitUntil(Duration),
    /// Send a REQUEST to the server, unicast.
    Renew,
    /// Broadcast a REQUEST.
    Rebind,
    /// Drop the address.
    Expire,
}

/// The renewal state machine of one lease. Times are clock readings
/// (`Duration` since some origin), so a fake clock can drive it.
#[derive(Debug, Clone)]
pub struct Renewer {
    start: Duration,
    timers: Timers,
    next_send: Duration,
    min_retry: Duration,
}

impl Renewer {
    pub fn new(start: Duration, timers: Timers, min_retry: Duration) -> Renewer {
        Renewer { start, timers, next_send: start + timers.t1, min_retry }
    }

    /// When the lease ends.
    pub fn end(&self) -> Duration {
        self.start + self.timers.lease
    }

    /// The lease time left at `now`.
    pub fn remaining(&self, now: Duration) -> Duration {
        self.end().saturating_sub(now)
    }

    pub fn phase(&self, now: Duration) -> Phase {
        let since = now.saturating_sub(self.start);
        if since >= self.timers.lease {
            Phase::Expired
        } else if since >= self.timers.t2 {
            Phase::Rebinding
        } else if since >= self.timers.t1 {
            Phase::Renewing
        } else {
            Phase::Bound
        }
    }

    pub fn action(&self, now: Duration) -> Action {
        match self.phase(now) {
            Phase::Expired => Action::Expire,
            Phase::Bound => Action::WaitUntil(self.next_send),
            _ if now < self.next_send => Action::WaitUntil(self.next_send),
            Phase::Renewing => Action::Renew,
            Phase::Rebinding => Action::Rebind,
        }
    }

    /// The end of the phase `now` is in: T2 while renewing, else the end of
    /// the lease.
    fn phase_end(&self, now: Duration) -> Duration {
        match self.phase(now) {
            Phase::Bound | Phase::Renewing => self.start + self.timers.t2,
            _ => self.end(),
        }
    }

    /// A REQUEST went out at `now`: schedule the next one.
    pub fn sent(&mut self, now: Duration) {
        let end = self.phase_end(now);
        let half = end.saturating_sub(now) / 2;
        self.next_send = (now + half.max(self.min_retry)).min(end);
    }

    /// How long to wait for the answer to a REQUEST sent at `now` (after
    /// [`Renewer::sent`]): until the next REQUEST is due.
    pub fn reply_deadline(&self) -> Duration {
        self.next_send.min(self.end())
    }

    /// The server ACKed a REQUEST sent at `sent_at`: a new lease from then.
    pub fn renewed(&mut self, sent_at: Duration, timers: Timers) {
        *self = Renewer::new(sent_at, timers, self.min_retry);
    }
}

/// Time for [`maintain`].
pub trait Clock {
    fn now(&mut self) -> Duration;
    fn sleep_until(&mut self, t: Duration);
    /// The real time to wait on the socket for a reply due by `deadline`.
    fn reply_wait(&mut self, deadline: Duration) -> Duration;
    /// No reply came by `deadline`.
    fn timed_out(&mut self, deadline: Duration);
}

/// `CLOCK_BOOTTIME`: it counts the time a suspended machine slept, as the
/// lease does.
pub struct BootClock;

impl Clock for BootClock {
    fn now(&mut self) -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }
    fn sleep_until(&mut self, t: Duration) {
        let d = t.saturating_sub(self.now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
    fn reply_wait(&mut self, deadline: Duration) -> Duration {
        deadline.saturating_sub(self.now())
    }
    fn timed_out(&mut self, _: Duration) {}
}

/// The machine side of a lease.
pub trait Host {
    /// The lease `r` holds for `remaining` from now: (re)configure the
    /// address with that lifetime (and its routes). `previous` is the
    /// address held until now, if it differs.
    fn bound(&mut self, r: &Reply, remaining: Duration, previous: Option<Ipv4Addr>) -> Result<(), String>;
    /// The lease on `addr` is over (`why`): remove the address.
    fn lost(&mut self, addr: Ipv4Addr, why: &str);
    /// Stop keeping the lease (checked before each step; tests use it).
    fn stop(&self) -> bool {
        false
    }
}

/// The datagram socket a lease is kept over: UDP port 68 on the interface
/// in the guest ([`UdpSocket`]), a scripted server in the fuzz target.
pub trait Wire {
    fn send_to(&self, buf: &[u8], dest: SocketAddrV4) -> io::Result<usize>;
    /// Wait at most `wait` (more than zero) for one datagram; its length.
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize>;
}

impl Wire for UdpSocket {
    fn send_to(&self, buf: &[u8], dest: SocketAddrV4) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, dest)
    }
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(wait))?;
        self.recv_from(buf).map(|(n, _)| n)
    }
}

/// Where the REQUESTs go.
pub struct Endpoints<W = UdpSocket> {
    pub sock: W,
    pub mac: [u8; 6],
    /// The server's port (67).
    pub server_port: u16,
    /// The broadcast destination (255.255.255.255:67).
    pub broadcast: SocketAddrV4,
}

/// Why [`maintain`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The lease ran out without an ACK; the address is gone.
    Expired,
    /// The server said NAK; the address is gone.
    Nak,
    /// The lease has no end (any more): nothing to renew.
    Forever,
    /// [`Host::stop`] said so.
    Stopped,
}

fn recv_reply(ep: &Endpoints<impl Wire>, clock: &mut impl Clock, xid: u32, deadline: Duration) -> Option<Reply> {
    let mut buf = [0u8; 1500];
    loop {
        let wait = clock.reply_wait(deadline);
        if wait.is_zero() {
            clock.timed_out(deadline);
            return None;
        }
        match ep.sock.recv(&mut buf, wait) {
            Ok(n) => {
                if let Some(r) = dhcp::parse(&buf[..n], xid, &ep.mac).filter(|r| r.msg_type == ACK || r.msg_type == NAK) {
                    return Some(r);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                clock.timed_out(deadline);
                return None;
            }
        }
    }
}

/// Keep the lease `lease` (granted at clock time `start`) until it is lost.
/// `ifname` is for the log.
pub fn maintain(
    ifname: &str,
    ep: &Endpoints<impl Wire>,
    mut lease: Reply,
    start: Duration,
    min_retry: Duration,
    clock: &mut impl Clock,
    host: &mut impl Host,
) -> Ended {
    let Some(timers) = Timers::from_reply(&lease) else {
        return Ended::Forever;
    };
    let mut r = Renewer::new(start, timers, min_retry);
    let mut attempt: u32 = 0;
    loop {
        if host.stop() {
            return Ended::Stopped;
        }
        let now = clock.now();
        match r.action(now) {
            Action::WaitUntil(t) => clock.sleep_until(t),
            Action::Expire => {
                log!("dhcp {ifname}: lease on {} expired without an ACK: removing the address", lease.yiaddr);
                host.lost(lease.yiaddr, "lease expired");
                return Ended::Expired;
            }
            a @ (Action::Renew | Action::Rebind) => {
                attempt = attempt.wrapping_add(1);
                let xid = dhcp::xid_for(&ep.mac).wrapping_add(attempt);
                let msg = dhcp::build_bound_request(xid, &ep.mac, lease.yiaddr);
                let dest = match (a, lease.server) {
                    (Action::Renew, Some(s)) => SocketAddrV4::new(s, ep.server_port),
                    _ => ep.broadcast,
                };
                let what = if a == Action::Renew { "renewing" } else { "rebinding" };
                match ep.sock.send_to(&msg, dest) {
                    Ok(_) => {
                        log!("dhcp {ifname}: {what} {} with {dest} ({} s of the lease left)", lease.yiaddr, r.remaining(now).as_secs())
                    }
                    Err(e) => log!("dhcp {ifname}: {what}: sending to {dest} failed: {e}"),
                }
                r.sent(now);
                match recv_reply(ep, clock, xid, r.reply_deadline()) {
                    Some(ack) if ack.msg_type == ACK => {
                        let mut new = ack;
                        if new.server.is_none() {
                            new.server = lease.server;
                        }
                        match Timers::from_reply(&new) {
                            Some(t) => {
                                r.renewed(now, t);
                                let previous = (new.yiaddr != lease.yiaddr).then_some(lease.yiaddr);
                                if let Err(e) = host.bound(&new, r.remaining(clock.now()), previous) {
                                    log!("dhcp {ifname}: applying the renewed lease failed: {e}");
                                }
                                log!(
                                    "dhcp {ifname}: {} renewed for {} s by {}; next renewal in {} s",
                                    new.yiaddr,
                                    t.lease.as_secs(),
                                    new.server.map(|s| s.to_string()).unwrap_or_default(),
                                    t.t1.as_secs()
                                );
                                lease = new;
                            }
                            None => {
                                let previous = (new.yiaddr != lease.yiaddr).then_some(lease.yiaddr);
                                if let Err(e) = host.bound(&new, Duration::MAX, previous) {
                                    log!("dhcp {ifname}: applying the renewed lease failed: {e}");
                                }
                                log!("dhcp {ifname}: {} renewed without an end: no more renewals", new.yiaddr);
                                return Ended::Forever;
                            }
                        }
                    }
                    Some(_) => {
                        log!("dhcp {ifname}: NAK for {}: removing the address", lease.yiaddr);
                        host.lost(lease.yiaddr, "NAK");
                        return Ended::Nak;
                    }
                    None => {}
                }
            }
        }
    }
}

// ------------------------------------------------------------ the agent's

/// A lease the agent configured.
#[derive(Debug, Clone)]
pub struct Held {
    pub iface: Iface,
    pub reply: Reply,
    /// `CLOCK_BOOTTIME` when the lease began.
    pub start: Duration,
    pub prefix: u8,
    /// Whether this lease set the machine's default route (and sets it
    /// again when renewed or taken anew).
    pub owns_default_route: bool,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Record a configured lease (one per interface: a new one replaces).
pub fn held(h: Held) {
    let mut v = HELD.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|x| x.iface.name != h.iface.name);
    v.push(h);
}

/// The lease the agent holds on the interface `name`, if any.
pub fn held_on(name: &str) -> Option<Held> {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|h| h.iface.name == name).cloned()
}

/// The address lifetime for a lease of `remaining` (kernel `valid_lft`,
/// seconds; `u32::MAX` is forever).
pub fn lifetime_secs(remaining: Duration) -> u32 {
    remaining.as_secs().min(u32::MAX as u64) as u32
}

/// The rtnetlink side of a lease.
struct NetHost {
    nl: Rtnl,
    iface: Iface,
    prefix: u8,
    owns_default_route: bool,
}

impl Host for NetHost {
    fn bound(&mut self, r: &Reply, remaining: Duration, previous: Option<Ipv4Addr>) -> Result<(), String> {
        if let Some(p) = previous {
            let _ = self.nl.del_address(self.iface.index, IpAddr::V4(p), self.prefix);
        }
        let mut has_default = !self.owns_default_route;
        let (_, prefix) = configure_lease(&mut self.nl, &self.iface, r, None, lifetime_secs(remaining), &mut has_default)?;
        self.prefix = prefix;
        Ok(())
    }

    fn lost(&mut self, addr: Ipv4Addr, why: &str) {
        // The kernel may have dropped it already (its lifetime ended too).
        match self.nl.del_address(self.iface.index, IpAddr::V4(addr), self.prefix) {
            Ok(()) => log!("dhcp {}: {addr}/{} removed ({why})", self.iface.name, self.prefix),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => log!("dhcp {}: {addr} already gone ({why})", self.iface.name),
            Err(e) => log!("dhcp {}: removing {addr} failed: {e}", self.iface.name),
        }
    }
}

/// Keep one lease forever: renew, rebind, and after a loss DISCOVER again
/// (every 10 s to 2 min) and keep the new lease.
fn keep(h: Held) {
    let name = h.iface.name.clone();
    let Some(mac) = h.iface.mac else { return };
    let mut nl = match Rtnl::open() {
        Ok(n) => n,
        Err(e) => {
            log!("dhcp {name}: no renewal: rtnetlink: {e}");
            return;
        }
    };
    let (mut reply, mut start, mut prefix) = (h.reply, h.start, h.prefix);
    let mut clock = BootClock;
    loop {
        let ep = match dhcp::socket_on(&name) {
            Ok(sock) => Endpoints { sock, mac, server_port: 67, broadcast: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67) },
            Err(e) => {
                log!("dhcp {name}: no renewal: socket: {e}");
                return;
            }
        };
        let mut host = NetHost { nl, iface: h.iface.clone(), prefix, owns_default_route: h.owns_default_route };
        if maintain(&name, &ep, reply, start, MIN_RETRY, &mut clock, &mut host) == Ended::Forever {
            return;
        }
        nl = host.nl;
        drop(ep);
        // INIT again.
        let mut wait = Duration::from_secs(10);
        loop {
            let t = clock.now();
            match dhcp::run(&name, &mac, super::apply::DHCP_TIMEOUT) {
                Ok(r) => match configure_lease(
                    &mut nl,
                    &h.iface,
                    &r,
                    None,
                    Timers::from_reply(&r).map(|t| lifetime_secs(t.lease)).unwrap_or(u32::MAX),
                    &mut !h.owns_default_route,
                ) {
                    Ok((line, p)) => {
                        log!("dhcp {name}: new lease: {line}");
                        (reply, start, prefix) = (r, t, p);
                        break;
                    }
                    Err(e) => log!("dhcp {name}: configuring the new lease failed: {e}"),
                },
                Err(e) => log!("dhcp {name}: {e}; trying again in {} s", wait.as_secs()),
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(120));
        }
    }
}

/// Appliance mode: keep every configured lease, one thread each. The
/// threads block the signals PID 1 handles (shutdown requests, SIGCHLD), so
/// those keep reaching the main thread's `wait`.
pub fn start() {
    let leases: Vec<Held> = HELD.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for h in leases {
        let Some(t) = Timers::from_reply(&h.reply) else {
            log!("dhcp {}: {} is leased without an end: no renewal needed", h.iface.name, h.reply.yiaddr);
            continue;
        };
        log!(
            "dhcp {}: keeping the lease on {} ({} s): renewal at T1 = {} s, rebinding at T2 = {} s",
            h.iface.name,
            h.reply.yiaddr,
            t.lease.as_secs(),
            t.t1.as_secs(),
            t.t2.as_secs()
        );
        if let Err(e) = super::spawn_quiet(format!("dhcp-{}", h.iface.name), move || keep(h)) {
            log!("dhcp: cannot start the renewal thread: {e}");
        }
    }
}

/// Root mode with `keep_leases`: fork a process that keeps every held
/// lease ([`start`], as in appliance mode) and lives on after PID 1
/// switches to the root and execs its init.
///
/// The child needs no file system: rtnetlink and UDP sockets only, and it
/// logs on the console fd it inherits, so the initramfs can be freed and
/// the root moved over it. It resets the signals PID 1 handles to their
/// defaults, so the root's shutdown (`kill -TERM -1`) ends it. Called with
/// no other thread running (the network step has joined its threads), so
/// the fork copies no lock held by another thread.
pub fn keep_after_switch() {
    if !HELD.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|h| Timers::from_reply(&h.reply).is_some()) {
        handover();
        return;
    }
    // SAFETY: fork in a process with one thread; the child only calls
    // async-signal-safe libc functions before it starts threads of its own.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => {
            log!("dhcp: cannot fork the lease keeper: {}; leases end with no renewal", io::Error::last_os_error());
            handover();
        }
        0 => {
            // SAFETY: resetting dispositions and the mask of this (only)
            // thread; prctl with a static name.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                for s in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT, libc::SIGCHLD, libc::SIGHUP] {
                    libc::signal(s, libc::SIG_DFL);
                }
                libc::prctl(libc::PR_SET_NAME, c"agent-dhcp".as_ptr() as libc::c_ulong, 0, 0, 0);
                libc::setsid();
            }
            // The renewal threads block the signals above; this thread
            // does not, so SIGTERM still ends the process.
            start();
            loop {
                std::thread::park();
            }
        }
        child => log!("dhcp: leases kept after switch_root by agent-dhcp, pid {child}"),
    }
}

/// Root mode without `keep_leases`: the agent execs the root's init and
/// cannot renew. Say when each leased address expires.
pub fn handover() {
    let now = BootClock.now();
    for h in HELD.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        match Timers::from_reply(&h.reply) {
            Some(t) => log!(
                "dhcp {}: {} is leased until {} s after boot; the agent does not renew it after switch_root: the kernel drops the address then unless the root's DHCP client takes it over (OEM key keep_leases: true leaves the agent's renewal running)",
                h.iface.name,
                h.reply.yiaddr,
                (h.start + t.lease).as_secs().max(now.as_secs())
            ),
            None => log!("dhcp {}: {} is leased without an end", h.iface.name, h.reply.yiaddr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn ack(lease: Option<u32>, t1: Option<u32>, t2: Option<u32>) -> Reply {
        Reply {
            msg_type: ACK,
            yiaddr: Ipv4Addr::new(10, 0, 2, 15),
            server: Some(Ipv4Addr::LOCALHOST),
            mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns: vec![],
            lease_secs: lease,
            renew_secs: t1,
            rebind_secs: t2,
            hostname: None,
            mtu: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn timers() {
        let t = Timers::from_reply(&ack(Some(86400), None, None)).unwrap();
        assert_eq!((t.t1, t.t2, t.lease), (S(43200), S(75600), S(86400)));
        let t = Timers::from_reply(&ack(Some(100), Some(30), Some(60))).unwrap();
        assert_eq!((t.t1, t.t2), (S(30), S(60)));
        // Inconsistent options: the defaults.
        let t = Timers::from_reply(&ack(Some(100), Some(60), Some(30))).unwrap();
        assert_eq!((t.t1, t.t2), (S(50), Duration::from_millis(87_500)));
        let t = Timers::from_reply(&ack(Some(100), Some(200), None)).unwrap();
        assert_eq!(t.t1, S(50));
        let t = Timers::from_reply(&ack(Some(100), Some(20), None)).unwrap();
        assert_eq!((t.t1, t.t2), (S(20), Duration::from_millis(87_500)));
        assert_eq!(Timers::from_reply(&ack(Some(u32::MAX), None, None)), None, "infinite");
        assert_eq!(Timers::from_reply(&ack(None, None, None)), None, "no lease time");
    }

    /// The REQUEST times RFC 2131 §4.4.5 gives for a 1000 s lease starting
    /// at 100 s: T1 = 500 s, T2 = 875 s, half the time left to T2 (then to
    /// the end) between retries, at least 60 s, never past the phase's end.
    #[test]
    fn retransmission_schedule() {
        let t = Timers::from_reply(&ack(Some(1000), None, None)).unwrap();
        let mut r = Renewer::new(S(100), t, MIN_RETRY);
        let mut now = S(100);
        let mut sends = Vec::new();
        loop {
            match r.action(now) {
                Action::WaitUntil(t) => {
                    assert!(t > now, "waits move forward");
                    now = t;
                }
                Action::Expire => break,
                a => {
                    sends.push((a, now.as_secs_f64() - 100.0));
                    r.sent(now);
                }
            }
        }
        assert_eq!(now, S(1100));
        assert_eq!(r.phase(now), Phase::Expired);
        let want = [
            (Action::Renew, 500.0),
            (Action::Renew, 687.5),  // + (875 - 500) / 2
            (Action::Renew, 781.25), // + (875 - 687.5) / 2
            (Action::Renew, 841.25), // + 60 (half would be 46.875)
            (Action::Rebind, 875.0), // T2 comes before 841.25 + 60
            (Action::Rebind, 937.5), // + (1000 - 875) / 2
            (Action::Rebind, 997.5), // + 60
        ];
        assert_eq!(sends, want);
    }

    #[test]
    fn an_ack_starts_a_new_lease() {
        let t = Timers::from_reply(&ack(Some(100), None, None)).unwrap();
        let mut r = Renewer::new(S(0), t, MIN_RETRY);
        assert_eq!(r.phase(S(49)), Phase::Bound);
        assert_eq!(r.action(S(49)), Action::WaitUntil(S(50)));
        assert_eq!(r.action(S(50)), Action::Renew);
        r.sent(S(50));
        r.renewed(S(50), t);
        assert_eq!(r.phase(S(99)), Phase::Bound);
        assert_eq!(r.action(S(60)), Action::WaitUntil(S(100)));
        assert_eq!(r.end(), S(150));
        assert_eq!(r.remaining(S(140)), S(10));
    }

    /// A fake clock: sleeping is instant. The test server answers every
    /// REQUEST at once, with the ACK/NAK or, when it "stays silent", with a
    /// reply to another transaction (which the client ignores): so the
    /// first wait for a deadline may take real time (10 s at most, for a
    /// loaded machine), and the second ask for the same deadline is a
    /// timeout that jumps the clock to it. No real-time race decides
    /// anything.
    struct FakeClock {
        now: Duration,
        asked: Option<Duration>,
    }

    fn fake(now: Duration) -> FakeClock {
        FakeClock { now, asked: None }
    }

    impl Clock for FakeClock {
        fn now(&mut self) -> Duration {
            self.now
        }
        fn sleep_until(&mut self, t: Duration) {
            self.now = self.now.max(t);
        }
        fn reply_wait(&mut self, deadline: Duration) -> Duration {
            if deadline <= self.now || self.asked == Some(deadline) {
                Duration::ZERO
            } else {
                self.asked = Some(deadline);
                Duration::from_secs(10)
            }
        }
        fn timed_out(&mut self, deadline: Duration) {
            self.asked = None;
            self.now = self.now.max(deadline);
        }
    }

    /// What the host was told; `stop_after` bound events, stop.
    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
        stop_after: Option<usize>,
    }

    impl Host for Recorder {
        fn bound(&mut self, r: &Reply, remaining: Duration, previous: Option<Ipv4Addr>) -> Result<(), String> {
            self.events.push(format!("bound {} for {} s (previous {previous:?})", r.yiaddr, remaining.as_secs()));
            Ok(())
        }
        fn lost(&mut self, addr: Ipv4Addr, why: &str) {
            self.events.push(format!("lost {addr}: {why}"));
        }
        fn stop(&self) -> bool {
            self.stop_after.is_some_and(|n| self.events.len() >= n)
        }
    }

    /// One REQUEST the test server saw.
    #[derive(Debug, Clone)]
    struct Seen {
        /// Which of the server's sockets: "unicast" (the server id) or
        /// "broadcast" (the stand-in for 255.255.255.255).
        to: &'static str,
        ciaddr: Ipv4Addr,
        broadcast_flag: bool,
        options: Vec<u8>,
    }

    /// A DHCP server on loopback: a "unicast" socket on 127.0.0.1 (its
    /// server id) and a "broadcast" one on 127.0.0.2. `answer(n)` says what
    /// to send to the n-th REQUEST: ACK, NAK, or (`None`) nothing the client
    /// takes: a reply to another transaction.
    fn server(answer: fn(usize) -> Option<u8>, lease: u32) -> (u16, SocketAddrV4, Arc<Mutex<Vec<Seen>>>) {
        let uni = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bc = UdpSocket::bind("127.0.0.2:0").unwrap();
        let port = uni.local_addr().unwrap().port();
        let bcast = match bc.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        for (sock, to) in [(uni, "unicast"), (bc, "broadcast")] {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let p = &buf[..n];
                    let mut options = Vec::new();
                    let mut i = 240;
                    while i + 1 < p.len() && p[i] != 255 {
                        options.push(p[i]);
                        i += 2 + p[i + 1] as usize;
                    }
                    let s = Seen { to, ciaddr: Ipv4Addr::new(p[12], p[13], p[14], p[15]), broadcast_flag: p[10] & 0x80 != 0, options };
                    let k = {
                        let mut v = seen.lock().unwrap();
                        v.push(s);
                        v.len() - 1
                    };
                    {
                        let (t, xid) = match answer(k) {
                            Some(t) => (t, u32::from_be_bytes(p[4..8].try_into().unwrap())),
                            None => (ACK, u32::from_be_bytes(p[4..8].try_into().unwrap()).wrapping_add(0x1000)),
                        };
                        let mut r = vec![0u8; 236];
                        r[0] = 2;
                        r[1] = 1;
                        r[2] = 6;
                        r[4..8].copy_from_slice(&xid.to_be_bytes());
                        r[12..16].copy_from_slice(&p[12..16]);
                        r[16..20].copy_from_slice(&p[12..16]);
                        r[28..34].copy_from_slice(&p[28..34]);
                        r.extend_from_slice(&[99, 130, 83, 99, 53, 1, t, 54, 4, 127, 0, 0, 1, 1, 4, 255, 255, 255, 0, 51, 4]);
                        r.extend_from_slice(&lease.to_be_bytes());
                        r.push(255);
                        let _ = sock.send_to(&r, from);
                    }
                }
            });
        }
        (port, bcast, seen)
    }

    fn endpoints(port: u16, bcast: SocketAddrV4) -> Endpoints {
        Endpoints { sock: UdpSocket::bind("127.0.0.1:0").unwrap(), mac: MAC, server_port: port, broadcast: bcast }
    }

    /// A real UDP exchange with a fake clock: the server ACKs the first
    /// renewal, then goes silent. The client renews by unicast at T1, gets a
    /// new lease, renews again at the new T1 (unicast, no answer), rebinds
    /// by broadcast from the new T2, and drops the address at the new end.
    #[test]
    fn renew_then_rebind_then_expire_over_udp() {
        let (port, bcast, seen) = server(|n| (n == 0).then_some(ACK), 1000);
        let ep = endpoints(port, bcast);
        let mut lease = ack(Some(1000), None, None);
        lease.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        let mut clock = fake(S(0));
        let mut host = Recorder::default();
        let ended = maintain("test0", &ep, lease, S(0), MIN_RETRY, &mut clock, &mut host);
        assert_eq!(ended, Ended::Expired);
        // The ACK to the REQUEST sent at 500 s started a 1000 s lease there:
        // it ends at 1500 s, and that is when the address goes.
        assert_eq!(clock.now, S(1500));
        assert_eq!(host.events, ["bound 10.0.2.15 for 1000 s (previous None)", "lost 10.0.2.15: lease expired"]);
        let seen = seen.lock().unwrap().clone();
        let to: Vec<&str> = seen.iter().map(|s| s.to).collect();
        // 1 renewal ACKed; then renewing from 1000 s (T1) to 1375 s (T2):
        // 1000, 1187.5, 1281.25, 1341.25; rebinding: 1375, 1437.5, 1497.5.
        assert_eq!(to, ["unicast", "unicast", "unicast", "unicast", "unicast", "broadcast", "broadcast", "broadcast"], "{seen:?}");
        for s in &seen {
            assert_eq!(s.ciaddr, Ipv4Addr::new(10, 0, 2, 15), "{s:?}");
            assert!(!s.broadcast_flag, "{s:?}");
            assert_eq!(s.options.first(), Some(&53), "{s:?}");
            assert!(!s.options.contains(&50) && !s.options.contains(&54), "requested-ip or server-id in a renewal: {s:?}");
        }
    }

    /// A NAK to the renewal: the address goes at once.
    #[test]
    fn nak_drops_the_address() {
        let (port, bcast, seen) = server(|_| Some(NAK), 1000);
        let ep = endpoints(port, bcast);
        let mut clock = fake(S(10));
        let mut host = Recorder::default();
        let ended = maintain("test0", &ep, ack(Some(100), None, None), S(10), MIN_RETRY, &mut clock, &mut host);
        assert_eq!(ended, Ended::Nak);
        assert_eq!(clock.now, S(60), "at T1");
        assert_eq!(host.events, ["lost 10.0.2.15: NAK"]);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// A silent unicast server, but another server answers the broadcast
    /// (it took over): the lease is rebound at T2, from the new server.
    #[test]
    fn rebinding_reaches_another_server() {
        let (port, _, seen) = server(|_| None, 1000);
        let (_, bcast2, seen2) = server(|_| Some(ACK), 600);
        let ep = endpoints(port, bcast2);
        let mut clock = fake(S(0));
        let mut host = Recorder { stop_after: Some(1), ..Recorder::default() };
        let ended = maintain("test0", &ep, ack(Some(100), None, None), S(0), MIN_RETRY, &mut clock, &mut host);
        assert_eq!(ended, Ended::Stopped);
        assert_eq!(host.events, ["bound 10.0.2.15 for 600 s (previous None)"]);
        assert_eq!(clock.now, Duration::from_millis(87_500), "rebound at T2");
        // T1 = 50 s, then T2 = 87.5 s is sooner than 50 + 60.
        assert_eq!(seen.lock().unwrap().iter().map(|s| s.to).collect::<Vec<_>>(), ["unicast"]);
        assert_eq!(seen2.lock().unwrap().iter().map(|s| s.to).collect::<Vec<_>>(), ["broadcast"]);
    }

    /// An infinite lease in the ACK: nothing more to do.
    #[test]
    fn a_lease_without_end_is_left_alone() {
        let (port, bcast, seen) = server(|_| Some(ACK), u32::MAX);
        let ep = endpoints(port, bcast);
        let mut clock = fake(S(0));
        let mut host = Recorder::default();
        assert_eq!(maintain("test0", &ep, ack(Some(u32::MAX), None, None), S(0), MIN_RETRY, &mut clock, &mut host), Ended::Forever);
        assert!(seen.lock().unwrap().is_empty());
        let ended = maintain("test0", &ep, ack(Some(100), None, None), S(0), MIN_RETRY, &mut clock, &mut host);
        assert_eq!(ended, Ended::Forever);
        assert_eq!(host.events, [format!("bound 10.0.2.15 for {} s (previous None)", Duration::MAX.as_secs())]);
        assert_eq!(clock.now, S(50));
    }
}
