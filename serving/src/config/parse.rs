//! TOML plumbing: syntax and type errors with their key path, unknown keys
//! collected all at once, and key paths mapped back to lines.
//!
//! The document is parsed once into toml's spanned tree ([`DeTable`]); the
//! typed config is deserialized from that tree through `serde_ignored`, so
//! every unknown key is seen, not just the first. Serde's internally tagged
//! enums (`type = "tcp_listen"`) buffer their table before choosing the
//! variant and drop unknown keys out of `serde_ignored`'s sight; those
//! tables are checked again on their own by [`Document::unknown_keys_in`].

use std::fmt::Write as _;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// A key of a table.
    Key(String),
    /// An element of an array (or array of tables).
    Index(usize),
}

/// Renders a key path the way errors name keys: `stream[0].receiver[1].listen`.
/// Keys that are not bare TOML keys are quoted.
pub(super) fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(key);
                } else {
                    let _ = write!(out, "{key:?}");
                }
            }
        }
    }
    out
}

/// Parses a key path rendered by [`render`] from bare keys (what validation
/// produces) back into segments.
fn segments_of(key: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        out.push(Segment::Key(name.to_owned()));
        while let Some((index, after)) = rest.split_once(']') {
            match index.parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => return out,
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

fn path_of_ignored(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            path_of_ignored(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            path_of_ignored(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_of_ignored(parent, out),
    }
}

/// A parsed TOML document with the spans of its keys and values.
pub(super) struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Parses `text` as TOML (syntax only).
    pub(super) fn parse(text: &'i str) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, root }),
            Err(e) => Err(ConfigError {
                key: String::new(),
                message: format!("invalid TOML: {}", e.message().trim()),
                location: e.span().map(|s| Location::of_offset(text, s.start)),
            }),
        }
    }

    /// Deserializes the whole document as `T`. Returns the value and one
    /// error per unknown key, or the first type error (serde stops there),
    /// named by the key whose value it is about, after the unknown keys
    /// seen before it.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &self,
    ) -> Result<(T, Vec<ConfigError>), Vec<ConfigError>> {
        let de = toml::de::Deserializer::from(self.root.clone());
        self.deserialize_from(de, &[])
    }

    /// Reads the table at `path` again as `T`, without its `tag` key: for
    /// tables that were read through an internally tagged enum. Serde
    /// buffers those before choosing the variant, which hides unknown keys
    /// from `serde_ignored` and the spans of bad values from toml. Returns
    /// the unknown keys, or the type error, now with its key; `None` if
    /// there is no table at `path`.
    fn reread<T: DeserializeOwned>(
        &self,
        path: &str,
        tag: &str,
    ) -> Option<Result<Vec<ConfigError>, Vec<ConfigError>>> {
        let at = segments_of(path);
        let Some((span, DeValue::Table(table))) = self.lookup(&at) else {
            return None;
        };
        let mut table = table.clone();
        table.remove(tag);
        let de = toml::de::ValueDeserializer::from(Spanned::new(span, DeValue::Table(table)));
        Some(
            self.deserialize_from::<T, _>(de, &at)
                .map(|(_, unknown)| unknown),
        )
    }

    /// Unknown keys of the table at `path` read as `T` (see
    /// [`reread`](Self::reread)). A type error there was reported already.
    pub(super) fn unknown_keys_in<T: DeserializeOwned>(
        &self,
        path: &str,
        tag: &str,
    ) -> Vec<ConfigError> {
        self.reread::<T>(path, tag)
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// The type error of the table at `path` read as `T`, naming the key
    /// inside the table (see [`reread`](Self::reread)).
    pub(super) fn type_error_in<T: DeserializeOwned>(
        &self,
        path: &str,
        tag: &str,
    ) -> Option<ConfigError> {
        self.reread::<T>(path, tag)?.err()?.pop()
    }

    /// The string value at `path`, if there is one.
    pub(super) fn str_at(&self, path: &str) -> Option<&str> {
        match self.lookup(&segments_of(path))? {
            (_, DeValue::String(s)) => Some(s),
            _ => None,
        }
    }

    fn deserialize_from<'de, T, D>(
        &self,
        de: D,
        prefix: &[Segment],
    ) -> Result<(T, Vec<ConfigError>), Vec<ConfigError>>
    where
        T: DeserializeOwned,
        D: serde::Deserializer<'de, Error = toml::de::Error>,
    {
        let mut unknown = Vec::new();
        let value = serde_ignored::deserialize(de, |path| {
            let mut full = prefix.to_vec();
            path_of_ignored(&path, &mut full);
            unknown.push(full);
        });
        let mut errors: Vec<ConfigError> = unknown
            .into_iter()
            .map(|path| {
                let mut error = ConfigError::new(render(&path), "unknown key");
                error.location = self.location_of_path(&path);
                error
            })
            .collect();
        match value {
            Ok(value) => Ok((value, errors)),
            Err(e) => {
                errors.push(self.type_error(&e));
                Err(errors)
            }
        }
    }

    fn type_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let mut path = Vec::new();
        if let Some(span) = &span {
            deepest_at(self.root.get_ref(), span, &mut Vec::new(), &mut path);
        }
        ConfigError {
            key: render(&path),
            message: e.message().trim().to_owned(),
            location: span.map(|s| Location::of_offset(self.text, s.start)),
        }
    }

    /// Where `key` (as rendered by [`render`]) is written; for a key the
    /// file leaves out, where its closest written parent is (the
    /// `[[view]]` a missing `column` belongs in).
    pub(super) fn location_of(&self, key: &str) -> Option<Location> {
        let path = segments_of(key);
        (1..=path.len())
            .rev()
            .find_map(|len| self.location_of_path(&path[..len]))
    }

    fn location_of_path(&self, path: &[Segment]) -> Option<Location> {
        let (span, _) = self.lookup_key(path)?;
        Some(Location::of_offset(self.text, span.start))
    }

    /// The span of the value at `path`, and the value.
    fn lookup(&self, path: &[Segment]) -> Option<(Range<usize>, &DeValue<'i>)> {
        self.walk(path)
            .map(|(_, value_span, value)| (value_span, value))
    }

    /// The span of the last key (or array element) of `path`.
    fn lookup_key(&self, path: &[Segment]) -> Option<(Range<usize>, &DeValue<'i>)> {
        self.walk(path)
            .map(|(key_span, _, value)| (key_span, value))
    }

    fn walk(&self, path: &[Segment]) -> Option<(Range<usize>, Range<usize>, &DeValue<'i>)> {
        let root = self.root.get_ref();
        let mut found: Option<(Range<usize>, Range<usize>, &DeValue<'i>)> = None;
        for segment in path {
            let current = found.as_ref().map(|(_, _, v)| *v);
            found = Some(match (segment, current) {
                (Segment::Key(name), None) => find(root, name)?,
                (Segment::Key(name), Some(DeValue::Table(t))) => find(t, name)?,
                (Segment::Index(i), Some(DeValue::Array(items))) => {
                    let item = items.get(*i)?;
                    (item.span(), item.span(), item.get_ref())
                }
                _ => return None,
            });
        }
        found
    }
}

/// The spans of key `name` of `table` and of its value, and the value.
fn find<'t, 'i>(
    table: &'t DeTable<'i>,
    name: &str,
) -> Option<(Range<usize>, Range<usize>, &'t DeValue<'i>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == name)
        .map(|(k, v)| (k.span(), v.span(), v.get_ref()))
}

/// Finds the deepest key path whose key or value span contains `span`.
/// Spans of sibling entries do not overlap, but a `[[table]]` element's span
/// is only its header, so every branch is searched.
fn deepest_at(
    table: &DeTable<'_>,
    span: &Range<usize>,
    prefix: &mut Vec<Segment>,
    best: &mut Vec<Segment>,
) {
    let contains = |s: Range<usize>| s.start <= span.start && span.end <= s.end;
    for (key, value) in table.iter() {
        prefix.push(Segment::Key(key.get_ref().to_string()));
        if (contains(key.span()) || contains(value.span())) && prefix.len() > best.len() {
            *best = prefix.clone();
        }
        deepest_in_value(value.get_ref(), span, prefix, best);
        prefix.pop();
    }
}

fn deepest_in_value(
    value: &DeValue<'_>,
    span: &Range<usize>,
    prefix: &mut Vec<Segment>,
    best: &mut Vec<Segment>,
) {
    match value {
        DeValue::Table(t) => deepest_at(t, span, prefix, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push(Segment::Index(i));
                let s = item.span();
                if s.start <= span.start && span.end <= s.end && prefix.len() > best.len() {
                    *best = prefix.clone();
                }
                deepest_in_value(item.get_ref(), span, prefix, best);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_and_parse_back() {
        let path = vec![
            Segment::Key("stream".into()),
            Segment::Index(0),
            Segment::Key("receiver".into()),
            Segment::Index(1),
            Segment::Key("lisen".into()),
        ];
        let text = render(&path);
        assert_eq!(text, "stream[0].receiver[1].lisen");
        assert_eq!(segments_of(&text), path);
        assert_eq!(render(&[Segment::Key("a b".into())]), "\"a b\"");
    }

    #[test]
    fn keys_are_located_in_the_text() {
        let text =
            "[server]\nlisten = \"x\"\n\n[[stream]]\nname = \"a\"\n[[stream]]\nname = \"b\"\n";
        let doc = Document::parse(text).unwrap();
        let at = |k| doc.location_of(k).map(|l| (l.line, l.column));
        assert_eq!(at("server.listen"), Some((2, 1)));
        assert_eq!(at("stream[1].name"), Some((7, 1)));
        assert_eq!(at("stream[1]"), Some((6, 1)));
        // Keys the file leaves out are located at their closest parent.
        assert_eq!(at("stream[2].name"), Some((4, 3)));
        assert_eq!(at("server.listen.deeper"), Some((2, 1)));
        assert_eq!(at("speed.epoch_ms"), None);
    }
}
