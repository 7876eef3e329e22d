//! Fuzz target: the configuration parser (`Config::from_toml`) on any text. It must never panic; a
//! rejected file gets a message that names the file, and every line/column it reports lies inside
//! the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scenesay::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    // the daemon reads the file with read_to_string: only UTF-8 reaches the parser
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/scenesay/config.toml");
    match Config::from_toml(text, path) {
        Ok(c) => {
            // an accepted configuration passes its own validation
            assert!(c.validate().is_ok(), "accepted but invalid: {c:?}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("/etc/scenesay/config.toml"), "{shown}");
            let lines = text.lines().count().max(1);
            if let ConfigError::Invalid { problems, .. } = &e {
                assert!(!problems.is_empty());
                for p in problems {
                    assert!(p.line <= lines + 1, "line {} of {lines}: {shown}", p.line);
                    assert!(!p.message.is_empty());
                }
            }
        }
    }
});
