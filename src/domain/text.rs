//! The characters refused in names, ids and metadata, each set written once: the
//! parsers check text against these tables, and the OpenAPI description states the
//! same tables as patterns, so what the description promises is what is enforced.
//!
//! Lengths are counted in characters (Unicode scalar values), as JSON Schema's
//! `minLength`/`maxLength` count them.

use utoipa::openapi::schema::{ObjectBuilder, Type};

/// A set of characters, as inclusive ranges.
pub type CharRanges = &'static [(char, char)];

/// Control characters: Unicode category Cc, exactly what `char::is_control` refuses.
pub const CONTROL: CharRanges = &[('\u{0}', '\u{1F}'), ('\u{7F}', '\u{9F}')];

/// The separator of storage paths and resources, refused in ids.
pub const SLASH: CharRanges = &[('/', '/')];

/// Characters that change how a name is shown without being seen: bidirectional
/// controls (a "report\u{202E}fdp.exe" displays as "reportexe.pdf") and invisible
/// format characters. The zero-width joiner (U+200D) and tag characters stay
/// allowed: emoji sequences are built from them.
pub const HIDDEN_FORMAT: CharRanges = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200C}'),
    ('\u{200E}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
];

/// Whether `c` is in one of `sets`.
pub fn is_in(c: char, sets: &[CharRanges]) -> bool {
    sets.iter()
        .flat_map(|set| set.iter())
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The first character of `s` in one of `sets`.
pub fn find_in(s: &str, sets: &[CharRanges]) -> Option<char> {
    s.chars().find(|&c| is_in(c, sets))
}

/// The number of characters of `s`, as JSON Schema counts a string's length.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// A pattern (ECMA-262, as OpenAPI uses) matching text with none of `sets`' characters.
pub fn pattern_without(sets: &[CharRanges]) -> String {
    let class: String = sets
        .iter()
        .flat_map(|set| set.iter())
        .map(|&(first, last)| {
            if first == last {
                escape(first)
            } else {
                format!("{}-{}", escape(first), escape(last))
            }
        })
        .collect();
    format!("^[^{class}]*$")
}

/// `\uXXXX`: understood alike by ECMA-262, Python and Rust regular expressions.
fn escape(c: char) -> String {
    format!("\\u{:04X}", u32::from(c))
}

/// The schema of a string of `min`..=`max` characters, none of them in `refused`.
pub fn string_schema(
    min: usize,
    max: usize,
    refused: &[CharRanges],
    description: &str,
) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern_without(refused)))
        .description(Some(description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_table_is_what_char_is_control_refuses() {
        for c in ('\u{0}'..='\u{10FF}').chain(['\u{FEFF}', '\u{10FFFF}']) {
            assert_eq!(
                is_in(c, &[CONTROL]),
                c.is_control(),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn patterns_name_every_range() {
        assert_eq!(
            pattern_without(&[CONTROL, SLASH]),
            "^[^\\u0000-\\u001F\\u007F-\\u009F\\u002F]*$"
        );
    }
}
