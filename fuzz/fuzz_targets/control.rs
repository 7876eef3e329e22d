//! Fuzz target: the control protocol's request parser on any bytes (oversize, invalid UTF-8,
//! half-written JSON, unknown commands). It must never panic; an accepted request survives a round
//! trip, and a refused one becomes an `error` reply that serialises to one JSON line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scenesay::control::protocol::{parse_request, Response};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(req) => {
            let line = serde_json::to_string(&req).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse_request(line.as_bytes()), Ok(req));
        }
        Err(e) => {
            let r: Response = e.into();
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'), "{line}");
            assert!(matches!(r, Response::Error { .. }));
        }
    }
});
