//! One line for an error and its causes, as the binaries print them.
//!
//! Library errors name their cause in their own message where it helps a reader (`cannot read
//! parquet: <why>`) and also expose it as `source()`, so that callers can inspect it. Printing
//! the whole chain (anyhow's `{:#}`) would then say the same thing twice; [`describe`] adds a
//! cause only when the text so far does not already hold it.

use std::error::Error;

/// `error`'s message followed by `: <cause>` for each cause not already quoted.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let message = current.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading x.csv: {0}")]
        Quoting(#[source] std::io::Error),
        #[error("reading x.csv")]
        Silent(#[source] std::io::Error),
    }

    #[test]
    fn causes_appear_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            describe(&Outer::Quoting(io())),
            "reading x.csv: disk on fire"
        );
        assert_eq!(
            describe(&Outer::Silent(io())),
            "reading x.csv: disk on fire"
        );
        let wrapped = anyhow::Error::new(Outer::Quoting(io())).context("loading data");
        assert_eq!(
            describe(wrapped.as_ref()),
            "loading data: reading x.csv: disk on fire"
        );
    }
}
