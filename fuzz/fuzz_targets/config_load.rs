//! The config loader (`config::load_str`, lints included): never panics on
//! any text, and every error it reports points inside the file.
#![no_main]

use std::path::Path;

use cutover::config;
use cutover_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    // Every ${NAME} resolves, so the fuzzer reaches past substitution.
    let env = |name: &str| (!name.is_empty()).then(|| format!("value-of-{name}"));
    match config::load_str(text, Path::new("/nonexistent/fuzz.toml"), &env) {
        Ok(loaded) => {
            let _ = loaded.warnings.len();
        }
        Err(errors) => {
            let lines = text.lines().count().max(1);
            for e in &errors.0 {
                assert!(e.line <= lines + 1, "{e:?} past the end of the file");
            }
            let _ = errors.to_string();
        }
    }
});
