//! Named process exit codes (sysexits-style where one fits), so scripts and systemd can tell a bad
//! config from a missing model from a partial batch failure.

/// Everything worked.
pub const OK: u8 = 0;
/// A failure with no more specific code.
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// Some inputs were processed, others failed (each failure was reported by name).
pub const PARTIAL: u8 = 3;
/// An input file does not exist or cannot be read (EX_NOINPUT).
pub const NO_INPUT: u8 = 66;
/// The model cannot be loaded: missing, unreadable or inconsistent checkpoint (EX_UNAVAILABLE).
pub const MODEL_UNAVAILABLE: u8 = 69;
/// The daemon is not running (nothing answers on its control socket), or it failed to answer in
/// time; trying again later may work (EX_TEMPFAIL).
pub const NOT_RUNNING: u8 = 75;
/// The configuration file is invalid (EX_CONFIG).
pub const CONFIG: u8 = 78;
/// Stopped by Ctrl-C / SIGTERM before the work was done (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// An error that carries the exit code the process should end with.
/// Its message is the whole chain of the wrapped error (so `{:#}` prints each cause once).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub source: anyhow::Error,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

impl std::error::Error for Exit {}

impl Exit {
    pub fn new(code: u8, source: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            source: source.into(),
        }
    }
}

/// Attaches an exit code to a result's error.
pub trait WithExit<T> {
    fn exit_code(self, code: u8) -> Result<T, anyhow::Error>;
}

impl<T, E: Into<anyhow::Error>> WithExit<T> for Result<T, E> {
    fn exit_code(self, code: u8) -> Result<T, anyhow::Error> {
        self.map_err(|e| Exit::new(code, e).into())
    }
}

/// The exit code for an error chain: the first [`Exit`] found, else [`FAILURE`].
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Exit>().map(|x| x.code))
        .unwrap_or(FAILURE)
}
