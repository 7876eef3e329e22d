//! Ctrl-C / SIGTERM handling for one-shot commands: a shared flag that long loops poll so they can
//! stop cleanly (finish the current line, flush output) instead of dying mid-write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// A cheaply clonable "stop requested" flag.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

static INTERRUPT: OnceLock<Flag> = OnceLock::new();

/// The process-wide flag raised by SIGINT / SIGTERM (handler installed on first use). A second
/// signal while the first is being handled exits at once with status 130.
pub fn interrupt_flag() -> Flag {
    INTERRUPT
        .get_or_init(|| {
            let flag = Flag::new();
            let f = flag.clone();
            let installed = ctrlc::set_handler(move || {
                if f.is_set() {
                    std::process::exit(130);
                }
                f.set();
            });
            if let Err(e) = installed {
                tracing::warn!("cannot install the Ctrl-C handler: {e}");
            }
            flag
        })
        .clone()
}
