//! Ctrl-C, SIGTERM and SIGHUP: what must be undone before beamops dies of them (a deploy lock
//! on the swarm, an ssh tunnel's private directory). Cleanups run newest first on a thread of
//! their own, then beamops dies of the signal as it would have without them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

type Cleanup = Box<dyn Fn() + Send>;

static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How long the cleanups may take before beamops dies of the signal anyway.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

fn cleanups() -> MutexGuard<'static, Vec<(u64, Cleanup)>> {
    CLEANUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `cleanup` if a signal ends beamops while the returned registration lives.
#[must_use = "the cleanup is forgotten when the registration is dropped"]
pub fn on_interrupt(cleanup: impl Fn() + Send + 'static) -> Registration {
    install();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    cleanups().push((id, Box::new(cleanup)));
    Registration(id)
}

#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        cleanups().retain(|(id, _)| *id != self.0);
    }
}

fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("beamops-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    // A cleanup talks to an Engine that may hang: beamops dies within
                    // CLEANUP_LIMIT whatever they do, and a second signal ends it at once.
                    let (done, finished) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        // Held to the end: nothing registers or unregisters while beamops dies.
                        let list = cleanups();
                        for (_, cleanup) in list.iter().rev() {
                            cleanup();
                        }
                        let _ = done.send(());
                    });
                    let deadline = std::time::Instant::now() + CLEANUP_LIMIT;
                    while std::time::Instant::now() < deadline {
                        if finished
                            .recv_timeout(std::time::Duration::from_millis(100))
                            .is_ok()
                            || signals.pending().next().is_some()
                        {
                            break;
                        }
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            });
    });
}
