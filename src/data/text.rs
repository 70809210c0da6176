//! Text cleaning for reviews scraped from HTML.

/// The HTML line breaks found in the IMDB reviews, matched ignoring ASCII case.
const LINE_BREAKS: [&str; 3] = ["<br />", "<br/>", "<br>"];

/// Replaces the HTML line breaks `<br />`, `<br/>` and `<br>` (in any case) by
/// spaces and collapses every run of whitespace into one space.
///
/// Leading and trailing whitespace is dropped; nothing else is changed (other
/// tags, entities and punctuation stay as they are).
pub fn clean_text(raw: &str) -> String {
    let mut cleaned = String::with_capacity(raw.len());
    let mut pending_space = false;
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if let Some(length) = line_break_length(rest) {
            rest = &rest[length..];
            pending_space = true;
            continue;
        }
        rest = &rest[c.len_utf8()..];
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !cleaned.is_empty() {
            cleaned.push(' ');
        }
        pending_space = false;
        cleaned.push(c);
    }
    cleaned
}

/// The length in bytes of the line break `text` starts with, if any.
fn line_break_length(text: &str) -> Option<usize> {
    if !text.starts_with('<') {
        return None;
    }
    LINE_BREAKS
        .iter()
        .find(|tag| {
            text.as_bytes()
                .get(..tag.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(tag.as_bytes()))
        })
        .map(|tag| tag.len())
}

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn line_breaks_become_spaces() {
        assert_eq!(clean_text("Good.<br /><br />Bad."), "Good. Bad.");
        assert_eq!(clean_text("a<br/>b<br>c<BR />d<Br>e<bR/>f"), "a b c d e f");
        assert_eq!(clean_text("<br />starts and ends<br />"), "starts and ends");
    }

    #[test]
    fn whitespace_runs_collapse() {
        assert_eq!(clean_text("  one \t two\n\n three  "), "one two three");
        assert_eq!(clean_text("a <br /> \n <br/> b"), "a b");
        assert_eq!(clean_text(""), "");
        assert_eq!(clean_text(" \n<br />\t"), "");
    }

    #[test]
    fn nothing_else_changes() {
        assert_eq!(
            clean_text("<i>Great</i> &amp; 10/10 <b>r</b> <bra> <br / > café"),
            "<i>Great</i> &amp; 10/10 <b>r</b> <bra> <br / > café"
        );
        assert_eq!(clean_text("x<b"), "x<b");
        assert_eq!(clean_text("<"), "<");
    }
}
