//! MQTT topic names and filters: validation and matching (MQTT v5 §4.7).
//!
//! The daemon subscribes to filters from the config (wildcards and `$share/<group>/<filter>`
//! allowed) and publishes to names derived from the base topic (no wildcards). Both are checked
//! here before anything reaches the broker: a bad filter is a config error naming its key, a
//! bad v5 response topic is an error reply, never a protocol error that would drop the
//! connection.

/// Why a topic name or filter is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("is empty")]
    Empty,
    /// Longer than MQTT's 65,535-byte string limit.
    #[error("is {0} bytes long, MQTT allows at most 65535")]
    TooLong(usize),
    /// Contains U+0000, which MQTT forbids in strings.
    #[error("contains a NUL character")]
    Nul,
    /// A wildcard in a topic name (publishing needs a concrete topic).
    #[error("contains the wildcard {0:?}; a topic to publish to cannot have wildcards")]
    WildcardInName(char),
    /// `#` not alone in the last level, or `+` sharing a level with other characters.
    #[error("has {0:?} inside a level; wildcards must fill a whole level (`a/+/b`, `a/#`)")]
    MisplacedWildcard(char),
    /// `#` before the last level.
    #[error("has `#` before the last level")]
    HashNotLast,
    /// `$share/` without a group or without a filter after it.
    #[error("is a shared subscription without a group or a filter: use `$share/<group>/<filter>`")]
    BadShare,
    /// A share group name containing `/`, `+` or `#`.
    #[error("has a share group name with a wildcard")]
    BadShareGroup,
}

const MAX_TOPIC_BYTES: usize = 65_535;

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(topic.len()));
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name to publish to: non-empty, no wildcards, no NUL, at most 65,535 bytes.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(TopicError::WildcardInName(c));
    }
    Ok(())
}

/// Checks a subscription filter, including `$share/<group>/<filter>`.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let inner = match strip_share(filter) {
        Some(Ok((group, inner))) => {
            if group.contains(['+', '#']) {
                return Err(TopicError::BadShareGroup);
            }
            inner
        }
        Some(Err(e)) => return Err(e),
        None => filter,
    };
    let levels: Vec<&str> = inner.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        for wildcard in ['+', '#'] {
            if level.contains(wildcard) && level.len() != 1 {
                return Err(TopicError::MisplacedWildcard(wildcard));
            }
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(TopicError::HashNotLast);
        }
    }
    Ok(())
}

/// Splits `$share/<group>/<filter>` into group and filter; `None` for ordinary filters.
fn strip_share(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !inner.is_empty() => Ok((group, inner)),
        _ => Err(TopicError::BadShare),
    })
}

/// The filter without a `$share/<group>/` prefix: what topics it actually matches.
pub fn effective_filter(filter: &str) -> &str {
    match strip_share(filter) {
        Some(Ok((_, inner))) => inner,
        _ => filter,
    }
}

/// Whether `filter` (already valid) matches the topic name `topic` (MQTT v5 §4.7.1–4.7.2:
/// wildcards at the first level do not match topics starting with `$`).
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = effective_filter(filter);
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (exact, Some(t)) if exact == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether `filter` (already valid) matches some topic name below `prefix` (a topic name not
/// starting with `$`): `prefix/x`, `prefix/x/y`, … at any depth.
pub fn matches_below(filter: &str, prefix: &str) -> bool {
    let mut filter_levels = effective_filter(filter).split('/');
    for level in prefix.split('/') {
        match filter_levels.next() {
            Some("#") => return true,
            Some(f) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    // Whatever levels the filter has left, some deeper topic matches them.
    filter_levels.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_matching_some_topic_below_a_prefix() {
        for filter in [
            "#",
            "s/#",
            "s/r/#",
            "s/r/+",
            "+/r/+/+/#",
            "s/r/a/b/c",
            "$share/g/s/r/+/+",
        ] {
            assert!(matches_below(filter, "s/r"), "{filter}");
        }
        for filter in ["s/r", "s/x/#", "s/+", "a/#", "$share/g/s/error"] {
            assert!(!matches_below(filter, "s/r"), "{filter}");
        }
    }

    #[test]
    fn names_reject_wildcards_and_empty() {
        assert_eq!(validate_name("a/b"), Ok(()));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName('+')));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName('#')));
        assert_eq!(validate_name("a\0b"), Err(TopicError::Nul));
    }

    #[test]
    fn filters_follow_the_wildcard_rules() {
        for ok in [
            "#",
            "a/#",
            "+/b",
            "a/+/c",
            "chat/+/message",
            "$share/g/a/#",
            "$share/g/+",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_filter("a/b#"),
            Err(TopicError::MisplacedWildcard('#'))
        );
        assert_eq!(
            validate_filter("a+/b"),
            Err(TopicError::MisplacedWildcard('+'))
        );
        assert_eq!(validate_filter("a/#/b"), Err(TopicError::HashNotLast));
        assert_eq!(validate_filter("$share/g"), Err(TopicError::BadShare));
        assert_eq!(validate_filter("$share//a"), Err(TopicError::BadShare));
        assert_eq!(
            validate_filter("$share/g+/a"),
            Err(TopicError::BadShareGroup)
        );
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("#", "sentimq/result/x"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(matches("$share/g/a/+", "a/b"));
        assert!(matches("+/+", "/x"));
    }
}
