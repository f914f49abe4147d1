//! Text that mountlag did not write, made safe to show: file names and symlink targets from a
//! volume, certificate subjects and names, process titles from `/proc`, bodies of HTTP answers,
//! strings in a `/status` document read over the network.
//!
//! Such text reaches terminals (`inspect`, `status`, logs in a terminal), log files and Kubernetes
//! Events. Raw, it can carry terminal escape sequences (rewrite the screen, set the window title,
//! hide the rest of a line), fake log lines (`\n`), right-to-left overrides that make a name read
//! differently from its bytes, or megabytes. One helper, used at every place such text is
//! formatted into a message:
//!
//! - control characters (C0, DEL, C1), Unicode line/paragraph separators, the byte order mark and
//!   bidirectional formatting characters are written as Rust's `escape_debug` writes them
//!   (`\n`, `\t`, `\u{1b}`, `\u{202e}`);
//! - the result is cut at a byte budget, at a character boundary, and ends with
//!   `…(+N bytes)` naming how many bytes of the input were left out; the marker fits inside the
//!   budget, so the output is never longer than the cap.
//!
//! Everything else, including backslashes and non-ASCII letters, is kept: names stay readable and
//! RFC 4514 subjects keep their own `\,` escapes. Escaping is idempotent (an escaped string has no
//! character left to escape), so text that passes through this twice, e.g. a problem detail that
//! is then quoted in an Event note, is not mangled.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Budget for one untrusted value (a file name, a subject, a process name) in a message: long
/// enough for any honest name, short enough that a few of them keep a 1 kB Event note readable.
pub const MAX_UNTRUSTED_BYTES: usize = 256;
/// Budget for a whole message built from several untrusted values (a problem detail, an error
/// chain quoted in `inspect`'s text output).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// `events.k8s.io/v1` rejects a `note` longer than 1 kB (1024 bytes, Go's `len`).
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;
/// Room kept for the truncation marker: `…` (3 bytes) + `(+` + up to 20 digits + ` bytes)`.
const MARKER_RESERVE: usize = 3 + 2 + 20 + 7;

/// `text` escaped and cut at [`MAX_UNTRUSTED_BYTES`], for `format!` and tracing fields.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted {
        text,
        max_bytes: MAX_UNTRUSTED_BYTES,
    }
}

/// `text` escaped and cut at `max_bytes` (the output, marker included, is never longer; a cap
/// under 32 bytes leaves room for the marker alone).
pub fn untrusted_capped(text: &str, max_bytes: usize) -> Untrusted<'_> {
    Untrusted { text, max_bytes }
}

/// `text` escaped and cut at `max_bytes`; borrowed when it needs neither.
pub fn sanitize(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes && !text.chars().any(needs_escape) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(untrusted_capped(text, max_bytes).to_string())
    }
}

/// A borrowed untrusted string whose `Display` escapes and truncates it.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a> {
    text: &'a str,
    max_bytes: usize,
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fits whole: no marker needed, so the full budget is available.
        if escaped_len(self.text) <= self.max_bytes {
            return write_escaped(f, self.text);
        }
        let budget = self.max_bytes.saturating_sub(MARKER_RESERVE);
        let mut written = 0;
        let mut shown_up_to = 0;
        for (index, c) in self.text.char_indices() {
            let width = escaped_width(c);
            if written + width > budget {
                break;
            }
            write_char_escaped(f, c)?;
            written += width;
            shown_up_to = index + c.len_utf8();
        }
        write!(f, "…(+{} bytes)", self.text.len() - shown_up_to)
    }
}

/// Characters that can move the cursor, end a line, recolour or reorder what follows.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'          // C0: ESC, BEL, CR, LF, backspace, ...
        | '\u{7f}'..='\u{9f}'       // DEL and C1 (CSI 0x9b, OSC 0x9d, ...)
        | '\u{61c}'                 // ARABIC LETTER MARK
        | '\u{200e}' | '\u{200f}'   // LRM, RLM
        | '\u{2028}' | '\u{2029}'   // line and paragraph separator
        | '\u{202a}'..='\u{202e}'   // LRE, RLE, PDF, LRO, RLO
        | '\u{2066}'..='\u{2069}'   // LRI, RLI, FSI, PDI
        | '\u{feff}' // byte order mark / zero-width no-break space
    )
}

fn escaped_width(c: char) -> usize {
    if !needs_escape(c) {
        return c.len_utf8();
    }
    match c {
        '\0' | '\t' | '\n' | '\r' => 2,
        // `\u{` + hex digits + `}`
        _ => 4 + format!("{:x}", u32::from(c)).len(),
    }
}

fn escaped_len(text: &str) -> usize {
    text.chars().map(escaped_width).sum()
}

fn write_char_escaped(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    if !needs_escape(c) {
        return f.write_char(c);
    }
    match c {
        '\0' => f.write_str("\\0"),
        '\t' => f.write_str("\\t"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        _ => write!(f, "\\u{{{:x}}}", u32::from(c)),
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    // Runs of plain text in one write: the usual case is a name with nothing to escape.
    let mut plain_from = 0;
    for (index, c) in text.char_indices() {
        if needs_escape(c) {
            f.write_str(&text[plain_from..index])?;
            write_char_escaped(f, c)?;
            plain_from = index + c.len_utf8();
        }
    }
    f.write_str(&text[plain_from..])
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["tls.crt", "CN=example.test, O=Ex\\,ample", "café ☕", ""] {
            assert!(matches!(sanitize(text, 64), Cow::Borrowed(t) if t == text));
            assert_eq!(untrusted(text).to_string(), text);
        }
    }

    #[test]
    fn control_c1_and_bidi_characters_are_escaped_like_escape_debug() {
        let cases = [
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("a\nb\rc\td\0e", "a\\nb\\rc\\td\\0e"),
            ("bell\u{7}del\u{7f}", "bell\\u{7}del\\u{7f}"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("evil\u{202e}txt.crt", "evil\\u{202e}txt.crt"),
            ("\u{2066}x\u{2069}\u{200f}", "\\u{2066}x\\u{2069}\\u{200f}"),
            ("line\u{2028}sep\u{feff}", "line\\u{2028}sep\\u{feff}"),
        ];
        for (raw, shown) in cases {
            assert_eq!(untrusted(raw).to_string(), shown, "{raw:?}");
            assert_eq!(sanitize(raw, 1024), shown);
            // The same escapes as Rust's own for these characters.
            assert_eq!(shown, raw.escape_debug().to_string(), "{raw:?}");
        }
    }

    #[test]
    fn escaping_is_idempotent() {
        let once = untrusted("\u{1b}]0;title\u{7}\u{202e}").to_string();
        assert_eq!(untrusted(&once).to_string(), once);
        let cut = untrusted_capped(&"\u{1b}x".repeat(10_000), 300).to_string();
        assert_eq!(untrusted_capped(&cut, 300).to_string(), cut);
    }

    #[test]
    fn long_text_is_cut_within_the_budget_with_a_marker() {
        let huge = "A".repeat(1 << 20);
        let shown = untrusted(&huge).to_string();
        assert!(shown.len() <= MAX_UNTRUSTED_BYTES, "{}", shown.len());
        let kept = shown.chars().take_while(|c| *c == 'A').count();
        assert!(kept >= MAX_UNTRUSTED_BYTES - MARKER_RESERVE);
        assert!(
            shown.ends_with(&format!("…(+{} bytes)", huge.len() - kept)),
            "{shown}"
        );
        // Exactly at the cap: kept whole.
        let exact = "b".repeat(40);
        assert_eq!(untrusted_capped(&exact, 40).to_string(), exact);
    }

    #[test]
    fn the_cut_never_splits_a_character_or_an_escape() {
        for cap in [MARKER_RESERVE, MARKER_RESERVE + 1, 50, 51, 52, 53, 100] {
            for unit in ["é", "☕", "\u{1b}", "\u{202e}", "😀a"] {
                let text = unit.repeat(200);
                let shown = untrusted_capped(&text, cap).to_string();
                assert!(shown.len() <= cap, "{cap} {unit:?}: {shown}");
                let (body, marker) = shown.rsplit_once('…').unwrap();
                let left: usize = marker
                    .trim_start_matches("(+")
                    .trim_end_matches(" bytes)")
                    .parse()
                    .unwrap();
                // What is shown plus what is counted as left out is the whole input.
                let shown_input = text.len() - left;
                assert!(text.is_char_boundary(shown_input));
                assert_eq!(body, untrusted(&text[..shown_input]).to_string());
            }
        }
    }
}
