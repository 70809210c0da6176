//! The README documents every configuration key, environment variable and error code.

use sentimq::daemon::config::keys::{KEYS, PASSWORD_ENV};
use sentimq::daemon::contract::ErrorCode;

#[test]
fn readme_lists_every_key_and_error_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut missing = Vec::new();
    for key in KEYS {
        if !readme.contains(&format!("`{}`", key.path)) {
            missing.push(key.path.to_string());
        }
        if !readme.contains(&format!("`{}`", key.env_var())) {
            missing.push(key.env_var());
        }
        if let Some(flag) = key.flag {
            if !readme.contains(flag) {
                missing.push(flag.to_string());
            }
        }
    }
    for code in ErrorCode::ALL {
        if !readme.contains(&format!("`{}`", code.as_str())) {
            missing.push(code.as_str().to_string());
        }
    }
    if !readme.contains(PASSWORD_ENV) {
        missing.push(PASSWORD_ENV.to_string());
    }
    assert!(
        missing.is_empty(),
        "README.md does not mention: {missing:?}"
    );
}
