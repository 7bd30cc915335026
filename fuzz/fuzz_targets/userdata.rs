//! `user_data` told apart (`provision::userdata::detect`): any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provision::userdata::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let k = userdata::detect(data);
    let _ = k.name();
    if data.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(k, Kind::Empty);
    }
});
