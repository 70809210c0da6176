//! One line for an error and its causes, as the binaries print them.
//!
//! Library errors state what failed in their own message (`x.parquet: cannot read parquet`) and
//! keep the underlying error as their `source()`, without quoting it; [`describe`] then prints
//! the whole chain once, `outer: cause: root cause`, like anyhow's `{:#}`. Wherever an error
//! reaches a user as one line (the binaries' `error:` line, MQTT error replies, log lines), print
//! it with [`describe`]: its `Display` alone omits the causes.

use std::error::Error;

/// `error`'s message followed by `: <cause>` for each error of its `source()` chain. Some other
/// crates' errors (ureq's, zip's) end their own message with their cause's and also return it
/// as `source()`; such a cause is not printed a second time right after the message that ends
/// with it.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut previous = error.to_string();
    let mut text = previous.clone();
    let mut cause = error.source();
    while let Some(current) = cause {
        let message = current.to_string();
        if !previous.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        previous = message;
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading x.csv")]
        Read(#[source] std::io::Error),
        #[error("loading the data")]
        Load(#[source] Outer2),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("parsing x.csv")]
    struct Outer2(#[source] std::io::Error);

    #[test]
    fn the_chain_is_joined_in_order() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(describe(&io()), "disk on fire");
        assert_eq!(describe(&Outer::Read(io())), "reading x.csv: disk on fire");
        assert_eq!(
            describe(&Outer::Load(Outer2(io()))),
            "loading the data: parsing x.csv: disk on fire"
        );
        let wrapped = anyhow::Error::new(Outer::Read(io())).context("loading data");
        assert_eq!(
            describe(wrapped.as_ref()),
            "loading data: reading x.csv: disk on fire"
        );
    }

    #[test]
    fn repeated_text_is_kept() {
        // No de-duplication by substring: a cause whose text the outer message happens to
        // contain is still printed.
        #[derive(Debug, thiserror::Error)]
        #[error("config is unreadable")]
        struct Named(#[source] std::io::Error);
        let io = std::io::Error::other("config");
        assert_eq!(describe(&Named(io)), "config is unreadable: config");
    }

    #[test]
    fn a_cause_that_ends_its_outer_message_is_printed_once() {
        // Other crates' style: the message quotes the cause, which is also the source.
        #[derive(Debug, thiserror::Error)]
        #[error("request failed: {0}")]
        struct Quoting(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot download")]
        struct Ours(#[source] Quoting);
        let io = std::io::Error::other("connection refused");
        assert_eq!(
            describe(&Ours(Quoting(io))),
            "cannot download: request failed: connection refused"
        );
    }
}
