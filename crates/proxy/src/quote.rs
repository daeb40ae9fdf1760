//! Quoting input in messages without echoing it: what a file or a client
//! sent is shown only as far as a reader needs it to find the place.
//!
//! A message about a file names the file, the line and the column; it
//! quotes a word of the file only when the word has the shape of what was
//! expected there (a keyword, a key, a number, an address), and then at
//! most [`MAX`] characters of it. Anything else — a line of `/etc/shadow`
//! read by mistake as a configuration, a 100 MB line, bytes that are not
//! text — is described by its length, never repeated.

use std::borrow::Cow;

/// The longest quote, in characters.
pub const MAX: usize = 64;

/// Whether `s` has the shape of a word of a configuration: a keyword, a
/// key, a number, a name or an address (letters, digits and `_ - . / : @
/// [ ] % + ,`), at most [`MAX`] bytes.
pub fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b':' | b'@' | b'[' | b']' | b'%' | b'+' | b','
                )
        })
}

/// `s` itself when it has a keyword's shape (letters, digits, `_`, `-`,
/// at most [`MAX`] bytes), else a description of it by length: for a word
/// where a keyword was expected ("unknown keyword X").
pub fn keyword(s: &str) -> Cow<'_, str> {
    let shaped = !s.is_empty()
        && s.len() <= MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if shaped {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("(a word of {} bytes, not quoted)", s.len()))
    }
}

/// `s` itself when it has a word's shape ([`is_word`]), else a
/// description of it by length: for messages that name what was found
/// ("unknown keyword X").
pub fn word(s: &str) -> Cow<'_, str> {
    if is_word(s) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("(a word of {} bytes, not quoted)", s.len()))
    }
}

/// At most [`MAX`] characters of `s`, anything but printable ASCII shown
/// as `?`, and the length of what was cut: for what a client sent (a
/// header) or a value a user must see to correct.
pub fn bounded(s: &str) -> Cow<'_, str> {
    let printable = |c: char| c.is_ascii_graphic() || c == ' ';
    if s.len() <= MAX && s.chars().all(printable) {
        return Cow::Borrowed(s);
    }
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if printable(c) { c } else { '?' })
        .collect();
    if s.chars().count() > MAX {
        out.push_str(&format!("… ({} bytes)", s.len()));
    }
    Cow::Owned(out)
}

/// Whether `s` may be quoted as a value: at most [`MAX`] bytes of
/// printable ASCII without `$`, `*`, `!`, quotes or backslashes (what a
/// password hash or a line of a credentials file has).
fn is_value(s: &str) -> bool {
    s.len() <= MAX
        && s.bytes().all(|b| {
            (b.is_ascii_graphic() || b == b' ')
                && !matches!(b, b'$' | b'*' | b'!' | b'"' | b'\\' | b'`')
        })
}

/// Whether `s` is a path to a key as serde writes one
/// (`services[0].listen`): words, dots and indices.
pub fn is_path(s: &str) -> bool {
    s.len() <= 4 * MAX && s.split('.').all(|seg| seg.is_empty() || is_word(seg))
}

/// A message that quotes input (serde's: `` unknown field `x` ``,
/// `invalid type: string "x"`) with each quote kept only when it has the
/// shape of a key (backticks) or of a plain value (double quotes), else
/// replaced by its length.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * MAX));
    let mut rest = message;
    while let Some(i) = rest.find(['`', '"']) {
        out.push_str(&rest[..i]);
        let q = rest.as_bytes()[i];
        let body = &rest[i + 1..];
        // The closing quote: the next one not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (j, b) in body.bytes().enumerate() {
            match b {
                b'\\' if q == b'"' => escaped = !escaped,
                b if b == q && !escaped => {
                    end = Some(j);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            out.push_str(&format!("(text of {} bytes, not quoted)", body.len() + 1));
            return out;
        };
        let inner = &body[..end];
        let keep = if q == b'`' {
            is_word(inner)
        } else {
            is_value(inner)
        };
        if keep {
            out.push(char::from(q));
            out.push_str(inner);
            out.push(char::from(q));
        } else {
            out.push_str(&format!(
                "(a {} of {} bytes, not quoted)",
                if q == b'`' { "key" } else { "value" },
                inner.len()
            ));
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_and_the_rest_described() {
        for w in [
            "virtual_server",
            "lb_algo",
            "10.0.0.1",
            "[::1]:80",
            "wrr",
            "/etc/rvs/x.conf",
            "a@b",
        ] {
            assert_eq!(word(w), w);
        }
        let shadow = "root:$y$j9T$abcdefgh$ijklmnopqrstuvwxyz0123456789:19000:0:99999:7:::";
        assert_eq!(
            word(shadow),
            format!("(a word of {} bytes, not quoted)", shadow.len())
        );
        assert!(!word("root:*:20228:0:99999:7:::").contains("root"));
        assert!(!word(&"x".repeat(100)).contains("xx"));
        assert!(!word("").is_empty());
        assert_eq!(keyword("virtual_server"), "virtual_server");
        assert_eq!(keyword("operator:"), "(a word of 9 bytes, not quoted)");
    }

    #[test]
    fn messages_keep_the_quotes_a_reader_needs_and_no_others() {
        assert_eq!(
            scrub("unknown field `wieght`, expected one of `name`, `listen`"),
            "unknown field `wieght`, expected one of `name`, `listen`"
        );
        assert_eq!(
            scrub("unknown field `root:*:20228:0:99999:7::`, expected one of `global`"),
            "unknown field (a key of 24 bytes, not quoted), expected one of `global`"
        );
        assert_eq!(
            scrub(r#"invalid type: string "1h 30 m", expected a duration"#),
            r#"invalid type: string "1h 30 m", expected a duration"#
        );
        assert_eq!(
            scrub(r#"invalid type: string "$y$j9T$abc\"def", expected x"#),
            "invalid type: string (a value of 15 bytes, not quoted), expected x"
        );
        assert_eq!(scrub("a \"dangling"), "a (text of 9 bytes, not quoted)");
        assert!(is_path("services[0].listen[1]"));
        assert!(!is_path("root:*:20228:0:99999:7::"));
    }

    #[test]
    fn bounded_keeps_a_short_line_and_cuts_a_long_one() {
        assert_eq!(bounded("attacker.example:9180"), "attacker.example:9180");
        assert_eq!(bounded("a\nb\u{7}"), "a?b?");
        let long = "y".repeat(100_000_000 / 1000);
        let b = bounded(&long);
        assert!(b.len() < 100, "{b}");
        assert!(b.ends_with("(100000 bytes)"), "{b}");
    }
}
