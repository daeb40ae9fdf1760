//! Where each key and value of a YAML document is, by path.
//!
//! serde_yaml reports positions only roughly (the start of the enclosing
//! mapping) and validation after deserialization has none at all. This index
//! maps a path as serde_path_to_error writes it (`services[0].listen[1]`) to
//! the line and column of the key and of the value, from the event stream of
//! a second, position-keeping parser (saphyr-parser). It is only consulted to
//! place an error.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Positions of the document's keys and values by path.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Positions {
    /// Indexes `text`. A document the parser cannot read gives an empty
    /// index (serde_yaml then reports the syntax error with its position).
    pub(crate) fn of(text: &str) -> Positions {
        let mut p = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else {
                break;
            };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let (container, scalar) = match &event {
                Event::Scalar(s, ..) => (false, Some(s.to_string())),
                Event::Alias(_) => (false, None),
                Event::MappingStart(..) | Event::SequenceStart(..) => (true, None),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    continue;
                }
                _ => continue,
            };
            let path = match stack.last_mut() {
                None => String::new(),
                Some(Frame::Map {
                    path,
                    key,
                    expecting_key,
                }) if *expecting_key => {
                    let k = join(path, scalar.as_deref().unwrap_or("?"));
                    p.keys.entry(k.clone()).or_insert(pos);
                    *key = Some(k.clone());
                    *expecting_key = false;
                    if container {
                        // A complex key: index inside it under a path that
                        // no error will name.
                        stack.push(Frame::Seq {
                            path: format!("{k}?"),
                            next: 0,
                        });
                    }
                    continue;
                }
                Some(Frame::Map {
                    key, expecting_key, ..
                }) => {
                    *expecting_key = true;
                    key.take().unwrap_or_default()
                }
                Some(Frame::Seq { path, next }) => {
                    let p = format!("{path}[{next}]");
                    *next += 1;
                    p
                }
            };
            p.values.entry(path.clone()).or_insert(pos);
            if container {
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        expecting_key: true,
                    },
                    _ => Frame::Seq { path, next: 0 },
                });
            }
        }
        p
    }

    /// The position for an error at `path`: the value (or, with `key`, the
    /// key) when the path is known, else the nearest known parent.
    pub(crate) fn find(&self, path: &str, key: bool) -> Option<Pos> {
        let mut path = path;
        loop {
            let hit = if key {
                self.keys.get(path).or_else(|| self.values.get(path))
            } else {
                self.values.get(path).or_else(|| self.keys.get(path))
            };
            if let Some(p) = hit {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
services:
  - name: web
    listen: [\"127.0.0.1:80\", \"[::1]:80\"]
    real_servers:
      - address: 10.0.0.1:80
        weight: 3
      - {address: 10.0.0.2:80, weight: -1}
";

    #[test]
    fn keys_and_values_by_path() {
        let p = Positions::of(DOC);
        let at = |path, key| p.find(path, key).map(|p| (p.line, p.column));
        assert_eq!(at("services[0].name", false), Some((2, 11)));
        assert_eq!(at("services[0].name", true), Some((2, 5)));
        assert_eq!(at("services[0].listen[1]", false), Some((3, 30)));
        assert_eq!(
            at("services[0].real_servers[0].weight", false),
            Some((6, 17))
        );
        assert_eq!(
            at("services[0].real_servers[1].weight", false),
            Some((7, 40))
        );
        // Unknown paths fall back to the nearest parent.
        assert_eq!(at("services[0].real_servers[1].nope", false), Some((7, 9)));
        assert_eq!(at("nothing.here", false), None);
    }
}
