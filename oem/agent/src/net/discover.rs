//! DHCP discovery on several NICs at once.
//!
//! A NIC without a DHCP server (an unplugged port, a second network without
//! DHCP) costs the whole [`super::apply::DHCP_TIMEOUT`] before its client
//! gives up. Run one after the other, every such NIC adds that to the boot;
//! run side by side, the boot waits for the slowest NIC only. So
//! [`super::apply()`] starts a [`Discovery`] (one plain thread, blocking
//! sockets: the agent has no async runtime, and a handful of NICs is a
//! handful of threads) for every interface that needs a lease, before it
//! configures anything, and then takes the results in the configuration's
//! order with [`Discovery::wait`]. What each lease changes (addresses, the
//! default route: the first lease in link order) is therefore the same as
//! when the NICs were asked one by one; only the waiting overlaps.
//!
//! Each discovery logs when it starts (`dhcp eth1: discovering …`) and when
//! it gets a lease (`dhcp eth1: leased …`) or gives up (`dhcp eth1: giving
//! up: …`), from its own thread, so the kernel timestamps of those lines
//! show the overlap.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::apply::Iface;
use super::dhcp::{self, Reply};
use super::lease::{BootClock, Clock};
use super::mac_text;
use crate::log;

/// What one discovery found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Reply, String>,
    /// `CLOCK_BOOTTIME` when the discovery began: the lease's start (it is
    /// at most that old when the ACK comes, so renewing from there is never
    /// late).
    pub start: Duration,
    /// How long the exchange took.
    pub took: Duration,
}

/// The exchange a discovery runs: the real one is [`dhcp::run`].
pub type Runner = Arc<dyn Fn(&Iface) -> Result<Reply, String> + Send + Sync>;

enum State {
    Running(JoinHandle<Outcome>),
    Done(Outcome),
    Taken,
}

/// A DHCP exchange running on its own thread. Dropping it waits for the
/// thread: a discovery never outlives the configuration step that started
/// it (its socket holds UDP port 68 on the interface).
pub struct Discovery {
    iface: String,
    state: State,
}

fn exchange(i: &Iface, run: &(dyn Fn(&Iface) -> Result<Reply, String> + Send + Sync)) -> Outcome {
    let start = BootClock.now();
    let t = Instant::now();
    let result = run(i);
    let took = t.elapsed();
    match &result {
        Ok(r) => log!(
            "dhcp {}: leased {} from {} after {} ms",
            i.name,
            r.yiaddr,
            r.server.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            took.as_millis()
        ),
        Err(e) => log!("dhcp {}: giving up: {e}", i.name),
    }
    Outcome { result, start, took }
}

impl Discovery {
    /// Start the real DHCP exchange on `i` (which must be up), for at most
    /// `timeout`.
    pub fn start(i: &Iface, timeout: Duration) -> Discovery {
        let mac = i.mac;
        log!(
            "dhcp {}: discovering ({}), giving up after {} s",
            i.name,
            mac.map(|m| mac_text(&m)).unwrap_or_else(|| "no MAC".into()),
            timeout.as_secs()
        );
        Discovery::start_with(
            i,
            Arc::new(move |i: &Iface| {
                let mac = i.mac.ok_or_else(|| format!("{} has no MAC address", i.name))?;
                dhcp::run(&i.name, &mac, timeout)
            }),
        )
    }

    /// Run `run(i)` on a thread of its own (the tests' fake exchanges go
    /// here). If no thread can be made, it runs right here, as before
    /// discoveries were parallel.
    pub fn start_with(i: &Iface, run: Runner) -> Discovery {
        let iface = i.clone();
        let r = run.clone();
        let spawned = super::spawn_quiet(format!("dhcp-{}", i.name), move || exchange(&iface, &*r));
        let state = match spawned {
            Ok(h) => State::Running(h),
            Err(e) => {
                log!("dhcp {}: cannot start a thread ({e}): asking here", i.name);
                State::Done(exchange(i, &*run))
            }
        };
        Discovery { iface: i.name.clone(), state }
    }

    /// The interface it runs on.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Wait for the result.
    pub fn wait(mut self) -> Outcome {
        self.finish()
    }

    fn finish(&mut self) -> Outcome {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Done(o) => o,
            State::Running(h) => h.join().unwrap_or_else(|_| Outcome {
                result: Err(format!("the DHCP thread of {} panicked", self.iface)),
                start: BootClock.now(),
                took: Duration::ZERO,
            }),
            State::Taken => Outcome { result: Err("already taken".into()), start: BootClock.now(), took: Duration::ZERO },
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let State::Running(_) = self.state {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::{Condvar, Mutex};

    fn nic(k: u8) -> Iface {
        Iface { name: format!("eth{k}"), index: 2 + u32::from(k), mac: Some([0x52, 0x54, 0, 0, 0, k]), ether: true }
    }

    fn lease(k: u8) -> Reply {
        Reply {
            msg_type: dhcp::ACK,
            yiaddr: Ipv4Addr::new(10, 0, k, 15),
            server: Some(Ipv4Addr::new(10, 0, k, 2)),
            mask: None,
            routers: vec![],
            dns: vec![],
            lease_secs: Some(3600),
            renew_secs: None,
            rebind_secs: None,
            hostname: None,
            mtu: None,
            warnings: Vec::new(),
        }
    }

    /// A rendezvous: each exchange says it started and then waits until
    /// all `n` have started, or gives up after `guard` (a deadlock guard
    /// only: exchanges run one at a time never all start, and fail).
    struct Rendezvous {
        started: Mutex<Vec<String>>,
        cv: Condvar,
        n: usize,
        guard: Duration,
    }

    impl Rendezvous {
        fn arrive(&self, who: &str) -> bool {
            let mut s = self.started.lock().unwrap();
            s.push(who.to_string());
            self.cv.notify_all();
            let (s, _) = self.cv.wait_timeout_while(s, self.guard, |s| s.len() < self.n).unwrap();
            s.len() >= self.n
        }
    }

    /// Three exchanges are all under way at the same time (each waits for
    /// the others before it answers), and the results come back per NIC
    /// whatever order they finish in: the last NIC's answers first, the
    /// first's last.
    #[test]
    fn discoveries_overlap_and_results_stay_with_their_nic() {
        let rv = Arc::new(Rendezvous { started: Mutex::new(vec![]), cv: Condvar::new(), n: 3, guard: Duration::from_secs(30) });
        let done: Arc<Mutex<Vec<String>>> = Arc::default();
        let (rv2, done2) = (rv.clone(), done.clone());
        let run: Runner = Arc::new(move |i: &Iface| {
            if !rv2.arrive(&i.name) {
                return Err(format!("{}: the others never started", i.name));
            }
            // Finish in reverse order: eth2, then eth1, then eth0.
            let k = i.mac.unwrap()[5];
            loop {
                let mut d = done2.lock().unwrap();
                if d.len() == 2 - k as usize {
                    d.push(i.name.clone());
                    break;
                }
                drop(d);
                std::thread::sleep(Duration::from_millis(5));
            }
            if k == 1 {
                Err("no DHCP lease on eth1".into())
            } else {
                Ok(lease(k))
            }
        });
        let ds: Vec<Discovery> = (0..3).map(|k| Discovery::start_with(&nic(k), run.clone())).collect();
        let got: Vec<(String, Result<Ipv4Addr, String>)> =
            ds.into_iter().map(|d| (d.iface().to_string(), d.wait().result.map(|r| r.yiaddr))).collect();
        assert_eq!(rv.started.lock().unwrap().len(), 3);
        assert_eq!(*done.lock().unwrap(), ["eth2", "eth1", "eth0"], "finished last NIC first");
        assert_eq!(
            got,
            [
                ("eth0".to_string(), Ok(Ipv4Addr::new(10, 0, 0, 15))),
                ("eth1".to_string(), Err("no DHCP lease on eth1".to_string())),
                ("eth2".to_string(), Ok(Ipv4Addr::new(10, 0, 2, 15))),
            ]
        );
    }

    /// The check above can fail: discoveries taken one after the other
    /// (start, wait, start, wait) never meet: the first one reports it.
    #[test]
    fn the_rendezvous_fails_when_run_one_by_one() {
        let rv = Arc::new(Rendezvous { started: Mutex::new(vec![]), cv: Condvar::new(), n: 2, guard: Duration::from_millis(100) });
        let rv2 = rv.clone();
        let run: Runner = Arc::new(move |i: &Iface| if rv2.arrive(&i.name) { Ok(lease(0)) } else { Err("alone".into()) });
        let first = Discovery::start_with(&nic(0), run.clone()).wait();
        assert_eq!(first.result.unwrap_err(), "alone", "eth0 waited for eth1, which had not started");
        let second = Discovery::start_with(&nic(1), run).wait();
        assert!(second.result.is_ok(), "eth1 finds eth0 arrived before it");
    }

    #[test]
    fn a_panicking_exchange_is_an_error_not_a_crash() {
        let run: Runner = Arc::new(|_: &Iface| panic!("boom"));
        let o = Discovery::start_with(&nic(0), run).wait();
        assert_eq!(o.result.unwrap_err(), "the DHCP thread of eth0 panicked");
    }

    /// Dropping a discovery waits for its thread (its socket must be gone
    /// before anything else binds port 68 on that NIC).
    #[test]
    fn dropping_waits_for_the_thread() {
        let finished = Arc::new(Mutex::new(false));
        let f = finished.clone();
        let run: Runner = Arc::new(move |_: &Iface| {
            std::thread::sleep(Duration::from_millis(100));
            *f.lock().unwrap() = true;
            Err("none".into())
        });
        drop(Discovery::start_with(&nic(0), run));
        assert!(*finished.lock().unwrap());
    }
}
