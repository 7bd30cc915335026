//! `guest-agent`: the initramfs `/init`. All the work is in the library
//! (`guest_agent::boot::run`); this only refuses to run as anything but
//! PID 1 and turns a panic into the emergency path instead of an exit.

fn main() {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("--version" | "-V")) {
        println!("guest-agent {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        eprintln!("guest-agent: must run as PID 1 (the initramfs /init); see the crate docs");
        std::process::exit(2);
    }
    // PID 1 must never exit: a panic anywhere becomes an emergency shell.
    let r = std::panic::catch_unwind(|| guest_agent::boot::run());
    let why = match r {
        Ok(()) => "boot sequence returned".to_string(),
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
    };
    guest_agent::boot::emergency(guest_agent::boot::Failure { what: "internal error (panic)".into(), why })
}
