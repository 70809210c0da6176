//! The README documents every configuration key, environment variable and error code, and its
//! configuration table says what the code does: each row's key, type and range, default,
//! environment variable, flag and meaning come from `config::keys`, and the defaults are
//! `Config::default()`'s.

use sentimq::daemon::config::keys::{Kind, KEYS, PASSWORD_ENV};
use sentimq::daemon::config::{Config, DEFAULT_BASE_TOPIC};
use sentimq::daemon::contract::ErrorCode;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn readme_lists_every_key_and_error_code() {
    let readme = readme();
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

/// The header of the README's configuration table.
const CONFIG_TABLE_HEADER: &str = "| key | type | default | environment | flag | meaning |";

/// The cells of the README's configuration table, one `Vec` per row (`\|` unescaped).
fn config_table(readme: &str) -> Vec<Vec<String>> {
    let mut lines = readme
        .lines()
        .skip_while(|line| line.trim() != CONFIG_TABLE_HEADER);
    assert!(
        lines.next().is_some(),
        "README.md has no configuration table (header {CONFIG_TABLE_HEADER:?})"
    );
    lines
        .skip(1) // |---|---|…
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner
                .replace("\\|", "\u{0}")
                .split('|')
                .map(|cell| cell.trim().replace('\u{0}', "|"))
                .collect()
        })
        .collect()
}

/// How the README writes a key's type: `string`, `path`, `bool`, `list of strings`,
/// `integer MIN–MAX` (digits grouped by commas from 10,000 up), `number 0 ≤ x < 1` or the
/// choices, `` `a` | `b` ``.
fn doc_kind(kind: Kind) -> String {
    fn number(n: u64) -> String {
        let digits = n.to_string();
        if n < 10_000 {
            return digits;
        }
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        grouped
    }
    match kind {
        Kind::Str => "string".into(),
        Kind::Path => "path".into(),
        Kind::Bool => "bool".into(),
        Kind::List => "list of strings".into(),
        Kind::Int { min, max } => format!("integer {}–{}", number(min), number(max)),
        Kind::Probability => "number 0 ≤ x < 1".into(),
        Kind::Choice(options) => options
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// The value at a dotted key path of `Config::default()`, as the README writes it, or `None`
/// where the default is unset (an `Option` the code fills in or leaves empty).
fn default_value(path: &str) -> Option<String> {
    let mut value = toml::Value::try_from(Config::default()).expect("Config serializes");
    for part in path.split('.') {
        value = value.as_table()?.get(part)?.clone();
    }
    Some(match value {
        toml::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// Each row of the README's configuration table is the key's metadata in `config::keys`, in
/// the same order; `Key::default` is what `Config::default()` holds, and within the key's range.
#[test]
fn readme_config_table_matches_keys_and_defaults() {
    let rows = config_table(&readme());
    let mut problems = Vec::new();
    let shown: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('`')).collect();
    let listed: Vec<&str> = KEYS.iter().map(|k| k.path).collect();
    if shown != listed {
        problems.push(format!(
            "rows {shown:?}\n    but config::keys::KEYS (README order) is {listed:?}"
        ));
    }
    for (row, key) in rows.iter().zip(KEYS) {
        if row.len() != 6 {
            problems.push(format!("{}: {} cells, not 6: {row:?}", key.path, row.len()));
            continue;
        }
        let flag = key.flag.map(|f| format!("`{f}`")).unwrap_or_default();
        let expected = [
            (0, "key", format!("`{}`", key.path)),
            (1, "type", doc_kind(key.kind)),
            (3, "environment", format!("`{}`", key.env_var())),
            (4, "flag", flag),
            (5, "meaning", key.doc.to_string()),
        ];
        for (index, column, want) in expected {
            if row[index] != want {
                problems.push(format!(
                    "{} {column}: README {:?}, code {want:?}",
                    key.path, row[index]
                ));
            }
        }
        // A value is in backquotes; a description of an unset default ("none") need not be.
        let default = &row[2];
        if *default != key.default && *default != format!("`{}`", key.default) {
            problems.push(format!(
                "{} default: README {default:?}, config::keys {:?}",
                key.path, key.default
            ));
        }
    }

    // `Key::default` (the README's text) against the code's defaults.
    for key in KEYS {
        match default_value(key.path) {
            Some(value) => {
                if value != key.default {
                    problems.push(format!(
                        "{} default: config::keys {:?}, Config::default() {value:?}",
                        key.path, key.default
                    ));
                }
                if let Kind::Int { min, max } = key.kind {
                    let n: u64 = value.parse().expect("an integer default");
                    if !(min..=max).contains(&n) {
                        problems.push(format!(
                            "{} default {n} is outside its range {min}..={max}",
                            key.path
                        ));
                    }
                }
            }
            None => {
                let unset = Config::default();
                let fine = match key.path {
                    "mqtt.inputs" => {
                        let written = key.default.replace("<base_topic>", DEFAULT_BASE_TOPIC);
                        toml::Value::try_from(unset.input_filters()).ok()
                            == format!("v = {written}")
                                .parse::<toml::Table>()
                                .ok()
                                .and_then(|t| t.get("v").cloned())
                    }
                    "mqtt.client_id" => {
                        key.default == "sentimqd-<hostname>"
                            && unset.client_id().starts_with("sentimqd")
                    }
                    "mqtt.tls.ca_file" => key.default == "system roots",
                    "model.graph" => key.default == "the manifest's `default_graph`",
                    _ => key.default == "none",
                };
                if !fine {
                    problems.push(format!(
                        "{} default: config::keys says {:?}, which does not describe the unset default",
                        key.path, key.default
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's configuration table disagrees with the code:\n  {}",
        problems.join("\n  ")
    );
}

/// `systemd/sentimqd.toml`, the packaged sample config, loads as it is, sets nothing but the
/// defaults (and the packaged model's path), and shows every key (set or commented out) under
/// its section.
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
    // "Every key is listed with its default": only the model path differs.
    let mut expected = Config::default();
    expected.model.path = "/usr/share/sentimq/models/imdb-minilm".into();
    assert_eq!(loaded.config, expected);

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
