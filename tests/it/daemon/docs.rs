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

/// `systemd/sentimqd.toml`, the packaged sample config, loads as it is and shows every key
/// (set or commented out) under its section.
#[test]
fn sample_config_lists_every_key_and_loads() {
    use sentimq::daemon::config::{self, Sources};

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/sentimqd.toml");
    let text = std::fs::read_to_string(path).expect("systemd/sentimqd.toml");
    let loaded = config::load(Sources {
        file: Some(path.into()),
        ..Sources::default()
    })
    .expect("the sample config loads");
    assert_eq!(
        loaded.config.model.path,
        std::path::Path::new("/usr/share/sentimq/models/imdb-minilm")
    );

    let mut section = String::new();
    let mut shown = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once(" = ") {
            shown.push(format!("{section}.{key}"));
        }
    }
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.path)
        .filter(|path| !shown.iter().any(|s| s == path))
        .collect();
    assert!(
        missing.is_empty(),
        "systemd/sentimqd.toml does not show: {missing:?}"
    );
}
