//! Log hygiene: text from outside (job output) is escaped so it cannot forge log lines,
//! and repeated lines are rate limited ([`RateLimit`]).

mod ratelimit;

pub use ratelimit::{DEFAULT_WINDOW, OneLine, RateLimit};

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` made safe to put in one log line: backslash, newline, carriage return and tab
/// become `\\`, `\n`, `\r`, `\t`; other control characters (the escape that starts a
/// terminal colour code among them) and the invisible characters that reorder text on
/// screen (bidirectional overrides) become `\u{..}`. Everything else is kept, so
/// ordinary output reads as it was printed. A job's output went into the log raw, so
/// printing a newline and a fake `INFO` line forged an entry (issue 14).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional embeddings, overrides and isolates, and the marks: they make a
        // line display in another order than it is written.
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        // Line and paragraph separators end a line in some viewers.
        || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept_as_it_is() {
        assert!(matches!(
            escape("backup done: 42 files, 3 MB (ok) é ✓"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn newlines_and_control_characters_cannot_start_a_new_line() {
        let forged =
            "done\n2026-01-01T00:00:00Z  INFO starling: left the cluster\r\x1b[31mred\x07\t\\";
        let e = escape(forged);
        assert!(
            !e.contains('\n') && !e.contains('\r') && !e.contains('\x1b'),
            "{e}"
        );
        assert_eq!(
            e,
            "done\\n2026-01-01T00:00:00Z  INFO starling: left the cluster\\r\\u{1b}[31mred\\u{7}\\t\\\\"
        );
        assert_eq!(escape("a\u{202e}b\u{2028}c"), "a\\u{202e}b\\u{2028}c");
    }
}
