//! A linear pass over YAML text that refuses nesting beyond [`MAX_DEPTH`]
//! before any parser sees it.
//!
//! libyaml's scanner (serde_yaml's) does work per token that grows with the
//! number of open flow collections, and building the error path of a deep
//! document costs its depth again: 100,000 nested brackets (200 KB) kept
//! `rvs check` busy for 29 s, 20,000 nested `- ` items took 1.2 GB. A
//! configuration needs about eight levels; this pass allows
//! [`MAX_DEPTH`], counting flow brackets, the block levels that indentation
//! opens, and compact `- ` items, and names the line and column where the
//! limit is passed. It is lexical and errs towards counting: quoted
//! strings, comments and block scalars are skipped, a bracket inside a
//! plain word (`a[1]`) does not count.

/// Deeper than this is refused.
pub(crate) const MAX_DEPTH: usize = 64;

/// Where the nesting passed [`MAX_DEPTH`]: 1-based line and column.
pub(crate) fn check(text: &str) -> Result<(), (usize, usize)> {
    // Indentation of the open block levels.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that goes on to the next line.
    let mut quote: Option<u8> = None;
    // Inside a block scalar (`|`, `>`): lines indented more than this.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        if let Some(at) = block_scalar {
            if indent > at || b[indent..].iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        if quote.is_none() && flow == 0 {
            if b[indent..].is_empty() || b[indent] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&top| indent < top) {
                indents.pop();
            }
            if indents.last().is_none_or(|&top| indent > top) {
                indents.push(indent);
            }
            i = indent;
        }
        let mut compact = 0;
        let mut token_start = true;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                match c {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if c == q => quote = None,
                    _ => {}
                }
                i += 1;
                token_start = false;
                continue;
            }
            match c {
                b'#' if token_start => break,
                b'"' | b'\'' if token_start => quote = Some(c),
                b'[' | b'{' if token_start => flow += 1,
                b']' | b'}' if flow > 0 => flow -= 1,
                b'-' | b'?'
                    if token_start && flow == 0 && b.get(i + 1).is_none_or(|n| *n == b' ') =>
                {
                    compact += 1;
                }
                b'|' | b'>' if token_start && flow == 0 => {
                    // A block scalar's header ends the line (but for its
                    // indicators and a comment).
                    let rest = &line[i + 1..];
                    let head = rest.split(" #").next().unwrap_or("").trim();
                    if head.bytes().all(|h| matches!(h, b'+' | b'-' | b'0'..=b'9')) {
                        block_scalar = Some(indent);
                        break;
                    }
                }
                _ => {}
            }
            // What may follow: a new token after a space, a bracket that
            // counted, a flow separator; otherwise this is a plain word.
            token_start = match c {
                b' ' | b'\t' => true,
                b'[' | b'{' => token_start,
                b']' | b'}' | b',' => flow > 0 || token_start,
                _ => false,
            };
            if indents.len() + compact + flow > MAX_DEPTH {
                return Err((n + 1, i + 1));
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configurations_pass() {
        for dir in ["../../config", "../../deploy/kubernetes/overlays/ingress"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yaml") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    assert_eq!(check(&text), Ok(()), "{}", p.display());
                }
            }
        }
        let tricky = "a: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"\nb: 'it''s [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\nc: x[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nd: |\n  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n                                                                          deep text\ne: 1 # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n";
        assert_eq!(check(tricky), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_where_it_passes_the_limit() {
        let flow = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(check(&flow), Err((1, 10 + MAX_DEPTH)));
        let maps = format!("services: {}1{}\n", "{a: ".repeat(1000), "}".repeat(1000));
        assert!(check(&maps).is_err());
        let compact = format!("services:\n  {}x\n", "- ".repeat(20_000));
        assert!(matches!(check(&compact), Err((2, _))));
        let mut blocks = String::new();
        for d in 0..100 {
            blocks.push_str(&" ".repeat(d));
            blocks.push_str("a:\n");
        }
        assert!(
            matches!(check(&blocks), Err((65, _))),
            "{:?}",
            check(&blocks)
        );
    }
}
