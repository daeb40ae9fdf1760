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
