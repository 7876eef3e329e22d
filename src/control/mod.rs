//! Ways to ask the daemon for something: the control socket ([`server`], [`client`], wire format in
//! [`protocol`]) and passive keyboard hotkeys ([`hotkey`]). SIGUSR1 is wired in the daemon.

pub mod client;
pub mod hotkey;
pub mod protocol;
pub mod server;
