//! Property tests of [`super`]: any text, any budget.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// The escaped form, written independently of the implementation.
fn reference_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\0' => "\\0".to_string(),
            '\t' => "\\t".to_string(),
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            c if needs_escape(c) => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

/// Text with plenty of what a hostile name carries: escapes, C1, bidi, multi-byte letters.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(vec![
                '\u{1b}', '\n', '\u{9b}', '\u{202e}', '\u{feff}', 'é', '😀', '\\', 'a',
            ]),
            0..400,
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// Never a raw control character; whole when it fits; otherwise a prefix of the escaped
    /// text, within the budget, and a marker that counts exactly the bytes left out.
    #[test]
    fn untrusted_text_is_escaped_whole_or_cut_within_its_budget(
        text in hostile_text(),
        cap in prop_oneof![0usize..64, 64usize..600, Just(MAX_UNTRUSTED_BYTES)],
    ) {
        let shown = untrusted_capped(&text, cap).to_string();
        prop_assert!(!shown.chars().any(needs_escape), "{shown:?}");
        let escaped = reference_escape(&text);
        if escaped.len() <= cap {
            prop_assert_eq!(&shown, &escaped);
            let borrowed = matches!(sanitize(&text, cap), Cow::Borrowed(_));
            prop_assert_eq!(borrowed, escaped == text);
        } else {
            prop_assert!(shown.len() <= cap.max(MARKER_RESERVE), "{} > {cap}", shown.len());
            let (body, marker) = shown.rsplit_once('…').unwrap();
            let left: usize = marker
                .strip_prefix("(+")
                .and_then(|m| m.strip_suffix(" bytes)"))
                .unwrap()
                .parse()
                .unwrap();
            prop_assert!(left > 0 && left <= text.len());
            let kept = text.len() - left;
            prop_assert!(text.is_char_boundary(kept));
            prop_assert_eq!(body, reference_escape(&text[..kept]));
        }
        prop_assert_eq!(sanitize(&text, cap), shown.as_str());
        // Escaping again changes nothing (an escaped name quoted in an Event note).
        prop_assert_eq!(untrusted_capped(&shown, shown.len()).to_string(), shown.clone());
    }
}
