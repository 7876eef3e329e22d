//! The `scenesay` binary: parses the command line and hands over to the library.

fn main() {
    println!("scenesay {}", env!("CARGO_PKG_VERSION"));
}
