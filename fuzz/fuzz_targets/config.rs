//! The node's configuration file: any text parses to a checked
//! configuration or to an error that names what is wrong, never a panic.
#![no_main]

use iris_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(cfg) => {
            // What from_toml returns has passed validation.
            cfg.validate().expect("a parsed config is valid");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
