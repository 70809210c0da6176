//! Merging defaults, the TOML file, `SENTIMQ_*` variables and flags into one [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};

use super::keys::{self, Kind, CONFIG_ENV, PASSWORD_ENV, SECTIONS};
use super::{Config, Secret};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigLayer {
    /// Built-in default.
    Default,
    /// The TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for ConfigLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigLayer::Default => f.write_str("default"),
            ConfigLayer::File(path) => write!(f, "{}", path.display()),
            ConfigLayer::Env(var) => write!(f, "environment variable {var}"),
            ConfigLayer::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Errors of loading the configuration; each names the key (and file, variable or flag).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("{path}: cannot read config file")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{path}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that does not exist.
    #[error("{origin}: unknown key {key}{}", hint.map(|h| format!(" (did you mean {h}?)")).unwrap_or_default())]
    UnknownKey {
        /// The key path.
        key: String,
        /// Where it was set.
        origin: ConfigLayer,
        /// The closest known key.
        hint: Option<&'static str>,
    },
    /// A value of the wrong type or out of range.
    #[error("{origin}: {key} must be {expected}, found {found}")]
    WrongType {
        /// The key path.
        key: String,
        /// Where it was set.
        origin: ConfigLayer,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A value that is well-typed but unusable, or inconsistent with another key.
    #[error("{key}: {message}")]
    Invalid {
        /// The key path.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The password file cannot be read.
    #[error("mqtt.password_file {path}: cannot read")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The key path the error is about, when it is about one key.
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::WrongType { key, .. } => Some(key),
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::PasswordFile { .. } => Some("mqtt.password_file"),
            ConfigError::ReadFile { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// The inputs of [`load`]: the file to read, the environment and the flags' values.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The config file, if any (`--config` / `SENTIMQ_CONFIG`).
    pub file: Option<PathBuf>,
    /// Environment variables; only `SENTIMQ_*` ones are looked at.
    pub env: Vec<(String, String)>,
    /// Values given as flags: key path and value.
    pub flags: Vec<(&'static str, &'static str, toml::Value)>,
}

impl Sources {
    /// The process environment (variables that are not UTF-8 are skipped) and the given flags.
    pub fn from_process(flags: &super::Flags) -> Self {
        Sources {
            file: flags.config.clone(),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with("SENTIMQ_"))
                .collect(),
            flags: flags.overrides(),
        }
    }
}

/// One key set above the defaults, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// The key path.
    pub key: String,
    /// The layer that set it last.
    pub layer: ConfigLayer,
}

/// A loaded configuration and how it came about.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The merged configuration.
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// Keys set by the environment or flags (the file's keys are not listed).
    pub overrides: Vec<Override>,
    /// Things that work but are probably mistakes.
    pub warnings: Vec<String>,
    /// Whether the file, the environment or a flag named a broker (`mqtt.server`); false
    /// means the default `mqtt://localhost:1883`. `sentimqd demo` starts its own broker then.
    pub server_is_set: bool,
}

/// Merges defaults < file < environment < flags into a [`Config`] and checks it.
///
/// Reads the config file and the password file. Errors name the key and where it was set.
pub fn load(sources: Sources) -> Result<Loaded, ConfigError> {
    let text = match &sources.file {
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    load_text(sources, text.as_deref())
}

/// [`load`] with the config file's contents already read (`file_text`, for `sources.file`).
pub(crate) fn load_text(sources: Sources, file_text: Option<&str>) -> Result<Loaded, ConfigError> {
    let mut table = toml::Table::new();
    let mut overrides = Vec::new();
    let mut warnings = Vec::new();

    if let (Some(path), Some(text)) = (&sources.file, file_text) {
        table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: path.clone(),
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
        check_table("", &table, &ConfigLayer::File(path.clone()))?;
    }

    let mut password = None;
    for (var, raw) in &sources.env {
        if var == PASSWORD_ENV {
            password = Some(Secret::new(raw.clone()));
            continue;
        }
        if var == CONFIG_ENV {
            continue;
        }
        let Some(key) = keys::KEYS.iter().find(|k| k.env_var() == *var) else {
            let looks_like_ours = SECTIONS.iter().any(|s| var.starts_with(&keys::env_var(s)));
            if looks_like_ours {
                warnings.push(format!(
                    "environment variable {var} matches no key and is ignored"
                ));
            }
            continue;
        };
        let origin = ConfigLayer::Env(var.clone());
        let value = parse_env(key.kind, raw).ok_or_else(|| ConfigError::WrongType {
            key: key.path.into(),
            origin: origin.clone(),
            expected: key.kind.expected(),
            found: format!("{raw:?}"),
        })?;
        check_value(key.path, key.kind, &value, &origin)?;
        set(&mut table, key.path, value);
        overrides.push(Override {
            key: key.path.into(),
            layer: origin,
        });
    }

    for (path, flag, value) in sources.flags {
        let key = keys::find(path).expect("flags map to known keys");
        let origin = ConfigLayer::Flag(flag);
        check_value(path, key.kind, &value, &origin)?;
        set(&mut table, path, value);
        overrides.retain(|o| o.key != path);
        overrides.push(Override {
            key: path.into(),
            layer: origin,
        });
    }

    let server_is_set = table
        .get("mqtt")
        .and_then(toml::Value::as_table)
        .is_some_and(|mqtt| mqtt.contains_key("server"));
    let mut config: Config =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                key: "config",
                message: e.message().to_string(),
            })?;

    config.mqtt.password = match (password, &config.mqtt.password_file) {
        (Some(secret), _) => Some(secret),
        (None, Some(path)) => Some(read_password(path, &mut warnings)?),
        (None, None) => None,
    };
    super::check::check(&config, &mut warnings)?;
    Ok(Loaded {
        config,
        file: sources.file,
        overrides,
        warnings,
        server_is_set,
    })
}

/// Checks every key of a file table against the key table, recursing into sections.
fn check_table(prefix: &str, table: &toml::Table, origin: &ConfigLayer) -> Result<(), ConfigError> {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if SECTIONS.contains(&path.as_str()) {
            let toml::Value::Table(inner) = value else {
                return Err(ConfigError::WrongType {
                    key: path,
                    origin: origin.clone(),
                    expected: "a table (section)".into(),
                    found: describe(value),
                });
            };
            check_table(&path, inner, origin)?;
            continue;
        }
        let Some(key) = keys::find(&path) else {
            return Err(ConfigError::UnknownKey {
                hint: keys::closest(&path),
                key: path,
                origin: origin.clone(),
            });
        };
        check_value(key.path, key.kind, value, origin)?;
    }
    Ok(())
}

fn check_value(
    path: &str,
    kind: Kind,
    value: &toml::Value,
    origin: &ConfigLayer,
) -> Result<(), ConfigError> {
    use toml::Value as V;
    let ok = match (kind, value) {
        (Kind::Str | Kind::Path, V::String(_)) => true,
        (Kind::Bool, V::Boolean(_)) => true,
        (Kind::Int { min, max }, V::Integer(i)) => {
            u64::try_from(*i).is_ok_and(|i| (min..=max).contains(&i))
        }
        (Kind::List, V::Array(items)) => items.iter().all(|i| matches!(i, V::String(_))),
        (Kind::Choice(options), V::String(s)) => options.contains(&s.as_str()),
        (Kind::Probability, V::Float(p)) => (0.0..1.0).contains(p),
        (Kind::Probability, V::Integer(i)) => *i == 0,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::WrongType {
            key: path.into(),
            origin: origin.clone(),
            expected: kind.expected(),
            found: describe(value),
        })
    }
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Table(_) => "a table".into(),
        other => other.to_string(),
    }
}

fn parse_env(kind: Kind, raw: &str) -> Option<toml::Value> {
    Some(match kind {
        Kind::Str | Kind::Path | Kind::Choice(_) => toml::Value::String(raw.into()),
        Kind::Bool => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return None,
        }),
        Kind::Int { .. } => toml::Value::Integer(raw.trim().parse().ok()?),
        Kind::Probability => toml::Value::Float(raw.trim().parse().ok()?),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
    })
}

fn set(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let leaf = parts.pop().expect("key paths are not empty");
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert(leaf.into(), value);
}

fn read_password(path: &Path, warnings: &mut Vec<String>) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "mqtt.password_file {} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                    path.display()
                ));
            }
        }
    }
    let first_line = text.lines().next().unwrap_or("");
    Ok(Secret::new(first_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentimqd.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let (_dir, path) = file(
            "[mqtt]\nserver = \"mqtt://file:1\"\nbase_topic = \"fromfile\"\n[pipeline]\nmax_batch = 4\n",
        );
        let loaded = load(Sources {
            file: Some(path.clone()),
            env: env(&[
                ("SENTIMQ_MQTT_SERVER", "mqtt://env:2"),
                ("SENTIMQ_PIPELINE_MAX_BATCH", "8"),
                ("SENTIMQ_MQTT_INPUTS", "a/+, b/#"),
                ("HOME", "/root"),
            ]),
            flags: vec![(
                "pipeline.max_batch",
                "--max-batch",
                toml::Value::Integer(12),
            )],
        })
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.mqtt.server, "mqtt://env:2");
        assert_eq!(c.mqtt.base_topic, "fromfile");
        assert_eq!(c.pipeline.max_batch, 12);
        assert_eq!(c.input_filters(), ["a/+", "b/#"]);
        assert_eq!(c.pipeline.workers, 0, "default kept");
        assert!(loaded.overrides.contains(&Override {
            key: "pipeline.max_batch".into(),
            layer: ConfigLayer::Flag("--max-batch")
        }));
    }

    /// A build with intra-op threads takes `pipeline.intra_op_threads = 2`; one without (the
    /// device packages) refuses it by name and resolves the default to 1.
    #[test]
    fn intra_op_threads_follow_the_build() {
        let (_dir, path) = file("[pipeline]\nworkers = 1\nintra_op_threads = 2\n");
        let loaded = load(Sources {
            file: Some(path),
            ..Sources::default()
        });
        if crate::engine::HAS_INTRA_OP_THREADS {
            assert_eq!(loaded.unwrap().config.intra_op_threads(), 2);
        } else {
            let err = loaded.unwrap_err();
            assert_eq!(err.key(), Some("pipeline.intra_op_threads"));
            assert!(
                err.to_string().contains("built without intra-op threads"),
                "{err}"
            );
        }
        let (_dir, path) = file("[pipeline]\nworkers = 1\n");
        let config = load(Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap()
        .config;
        let expected = if crate::engine::HAS_INTRA_OP_THREADS {
            super::super::available_cores()
        } else {
            1
        };
        assert_eq!(config.intra_op_threads(), expected);
    }

    /// `model.uncertain_below` takes 0 (off) or a number below 1, from the file or the
    /// environment, and names itself when out of range.
    #[test]
    fn uncertain_below_is_a_probability() {
        let from_file = |text: &str| {
            let (_dir, path) = file(text);
            load(Sources {
                file: Some(path),
                ..Sources::default()
            })
        };
        let config = |text: &str| from_file(text).unwrap().config.model.uncertain_below;
        assert_eq!(config(""), 0.0, "off by default");
        assert_eq!(config("[model]\nuncertain_below = 0\n"), 0.0);
        assert_eq!(config("[model]\nuncertain_below = 0.75\n"), 0.75);
        for bad in ["1.0", "1", "-0.1", "\"0.7\"", "nan"] {
            let err = from_file(&format!("[model]\nuncertain_below = {bad}\n")).unwrap_err();
            assert_eq!(err.key(), Some("model.uncertain_below"), "{bad}: {err}");
            assert!(err.to_string().contains("up to (not including) 1"), "{err}");
        }
        let loaded = load(Sources {
            env: env(&[("SENTIMQ_MODEL_UNCERTAIN_BELOW", "0.6")]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(loaded.config.model.uncertain_below, 0.6);
        for bad in ["1.5", "high"] {
            let err = load(Sources {
                env: env(&[("SENTIMQ_MODEL_UNCERTAIN_BELOW", bad)]),
                ..Sources::default()
            })
            .unwrap_err();
            assert!(
                err.to_string().contains("SENTIMQ_MODEL_UNCERTAIN_BELOW"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let (_dir, path) = file("[mqtt]\nca_file = \"x\"\n");
        let err = load(Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("mqtt.ca_file"));
        assert!(
            err.to_string().contains("did you mean mqtt.tls.ca_file"),
            "{err}"
        );

        let (_dir, path) = file("[pipeline]\nworkers = \"two\"\n");
        let err = load(Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("pipeline.workers"));

        let err = load(Sources {
            env: env(&[("SENTIMQ_MQTT_RECEIVE_MAXIMUM", "70000")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("SENTIMQ_MQTT_RECEIVE_MAXIMUM"),
            "{err}"
        );
    }

    #[test]
    fn topic_mistakes_are_config_errors() {
        for (inputs, key) in [
            ("a/#/b", "mqtt.inputs"),
            ("#", "mqtt.inputs"),
            ("sentimq/#", "mqtt.inputs"),
            ("$share/g", "mqtt.inputs"),
        ] {
            let err = load(Sources {
                env: env(&[("SENTIMQ_MQTT_INPUTS", inputs)]),
                ..Sources::default()
            })
            .unwrap_err();
            assert_eq!(err.key(), Some(key), "{inputs}: {err}");
        }
        let err = load(Sources {
            env: env(&[("SENTIMQ_MQTT_BASE_TOPIC", "a/+")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("mqtt.base_topic"));
    }

    #[test]
    fn tls_files_need_mqtts() {
        let err = load(Sources {
            env: env(&[("SENTIMQ_MQTT_TLS_CA_FILE", "/ca.pem")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("mqtt.tls.ca_file"));
    }

    #[test]
    fn password_comes_from_env_or_file_and_never_prints() {
        let loaded = load(Sources {
            env: env(&[("SENTIMQ_MQTT_USERNAME", "u"), (PASSWORD_ENV, "hunter2")]),
            ..Sources::default()
        })
        .unwrap();
        let printed = format!("{:?}", loaded.config);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(loaded.config.mqtt.password.unwrap().expose(), "hunter2");

        let (dir, _) = file("");
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let loaded = load(Sources {
            env: env(&[
                ("SENTIMQ_MQTT_USERNAME", "u"),
                ("SENTIMQ_MQTT_PASSWORD_FILE", secret.to_str().unwrap()),
            ]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(loaded.config.mqtt.password.unwrap().expose(), "s3cret");

        let err = load(Sources {
            env: env(&[("SENTIMQ_MQTT_PASSWORD_FILE", "/nonexistent/pw")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("mqtt.password_file"));
    }
}
