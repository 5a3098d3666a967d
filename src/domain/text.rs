//! The one rule for every human-readable field (key names, labels, aliases, model and binding
//! names, emails): no character that a person reading the value cannot see, or that changes how
//! the characters around it are shown. Refused are
//!
//! - control characters: C0 (NUL, tab, line feed, ...), DEL and C1 (U+0080 to U+009F);
//! - format characters (Unicode category Cf): zero-width space, joiners, soft hyphen,
//!   directional marks, embeddings, overrides and isolates, the byte-order mark, word joiner,
//!   tags, interlinear annotation marks;
//! - the other default-ignorable code points, which render as nothing: Hangul fillers, the
//!   combining grapheme joiner, Khmer inherent vowels, Mongolian variation selectors, variation
//!   selectors;
//! - line and paragraph separators, and noncharacters.
//!
//! Emails are also compared in one normal form ([`normalize_email`]): NFKC, then lower case, so
//! that a fullwidth or otherwise compatibility-encoded spelling of an address is that address.
//!
//! Pure: no I/O. Each field's own limits (length, character set) stay with the field.

use unicode_normalization::UnicodeNormalization;

/// Why a text was refused; the field's validation turns it into its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFault {
    /// A control character (C0, DEL, C1).
    Control,
    /// An invisible or formatting character.
    Invisible,
}

impl TextFault {
    /// The error message for `param`.
    pub fn message(self, param: &str) -> String {
        match self {
            Self::Control => format!(
                "{param} must not contain control characters (such as NUL, tab, line breaks or \
                 DEL)"
            ),
            Self::Invisible => format!(
                "{param} must not contain invisible or formatting characters (such as \
                 zero-width spaces, byte-order marks or direction overrides)"
            ),
        }
    }
}

/// Code points that are invisible or change how the text around them is shown: category Cf,
/// the default-ignorable code points, line and paragraph separators. Inclusive ranges, sorted.
pub const INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x0600, 0x0605),   // Arabic number signs
    (0x061C, 0x061C),   // Arabic letter mark
    (0x06DD, 0x06DD),   // Arabic end of ayah
    (0x070F, 0x070F),   // Syriac abbreviation mark
    (0x0890, 0x0891),   // Arabic pound and piastre marks above
    (0x08E2, 0x08E2),   // Arabic disputed end of ayah
    (0x115F, 0x1160),   // Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels
    (0x180B, 0x180F),   // Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),   // zero-width space, non-joiner, joiner, LRM, RLM
    (0x2028, 0x2029),   // line and paragraph separators
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFEFF, 0xFEFF),   // byte-order mark, zero-width no-break space
    (0xFFA0, 0xFFA0),   // halfwidth Hangul filler
    (0xFFF0, 0xFFFB),   // reserved specials, interlinear annotation marks
    (0x110BD, 0x110BD), // Kaithi number sign
    (0x110CD, 0x110CD), // Kaithi number sign above
    (0x13430, 0x1343F), // Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol format controls
    (0xE0000, 0xE0FFF), // tags and variation selectors supplement
];

/// Noncharacters: U+FDD0 to U+FDEF, and the last two code points of every plane.
pub fn is_noncharacter(c: u32) -> bool {
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

fn is_invisible(c: char) -> bool {
    let c = u32::from(c);
    let noncharacter = is_noncharacter(c);
    noncharacter || INVISIBLE.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// The first fault of `text` under the rule, if any.
pub fn fault(text: &str) -> Option<TextFault> {
    text.chars().find_map(|c| {
        if c.is_control() {
            Some(TextFault::Control)
        } else if is_invisible(c) {
            Some(TextFault::Invisible)
        } else {
            None
        }
    })
}

/// Checks `text` under the rule, answering the message for `param` when it breaks it.
pub fn check(param: &str, text: &str) -> Result<(), String> {
    fault(text).map_or(Ok(()), |f| Err(f.message(param)))
}

/// The form in which emails are stored and compared: surrounding whitespace trimmed, NFKC,
/// lower case (and NFKC again, since lower-casing can leave a form NFKC would change). Checks
/// nothing: [`fault`] is checked on what the client sent.
pub fn normalize_email(raw: &str) -> String {
    let compatible: String = raw.trim().nfkc().collect();
    compatible.to_lowercase().nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranges_are_sorted_and_apart() {
        for pair in INVISIBLE.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn control_and_invisible_characters_are_refused() {
        for c in [
            '\0', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}',
        ] {
            assert_eq!(fault(&format!("a{c}b")), Some(TextFault::Control), "{c:?}");
        }
        for c in [
            '\u{ad}',
            '\u{200b}',
            '\u{200d}',
            '\u{200e}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{2028}',
            '\u{feff}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{e0041}',
            '\u{fffe}',
            '\u{fdd0}',
            '\u{1ffff}',
        ] {
            assert_eq!(
                fault(&format!("a{c}b")),
                Some(TextFault::Invisible),
                "{c:?}"
            );
        }
    }

    #[test]
    fn letters_of_any_script_spaces_and_symbols_pass() {
        for text in [
            "ci deploys",
            "Production — EU, «main»",
            "Продакшн",
            "デプロイ",
            "naïve café",
            "🚀",
            "a\u{a0}b",
            "",
        ] {
            assert_eq!(fault(text), None, "{text:?}");
        }
    }

    #[test]
    fn emails_are_compared_after_nfkc_and_lower_case() {
        for same in [
            "ada@example.com",
            " ADA@Example.COM ",
            "ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ",
            "ada＠example．com",
        ] {
            assert_eq!(normalize_email(same), "ada@example.com", "{same:?}");
        }
        // A ligature decomposes; a form already normal stays.
        assert_eq!(normalize_email("ﬁ@x.io"), "fi@x.io");
        let once = normalize_email("İSTANBUL@Ｘ.io");
        assert_eq!(normalize_email(&once), once);
    }
}
