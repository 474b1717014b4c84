//! Shell-style globs for device-class rules: `*Camera*`, `/dev/video?`, `[0-9a-f]*`.
//!
//! `*` matches any run of characters (`/` included: a device path is text here, not a file
//! tree), `?` one character, `[abc]` one of a set, `[a-z]` one of a range, `[!x]` any one but
//! those; everything else matches itself, case-sensitively. There are no escapes: a literal
//! `*`, `?` or `[` is written as a one-character set (`[*]`), and a `]` that comes first in a
//! set is a member of it (`[]x]`), as in fnmatch and udev.
//!
//! Matching runs in time proportional to the pattern's length times the text's, whatever the
//! pattern: one backtracking point (the last `*`) is kept rather than one per `*`, since a
//! later `*` can always absorb what an earlier one would have. So a hostile pattern such as
//! `a*a*a*a*a*b` costs no more than a plain one. A pattern is checked once ([`check`], with the
//! position of the first problem); [`matches`] is total and says false for a pattern `check`
//! refuses.

use std::fmt;

/// Why a pattern is not a glob, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// Byte offset of the offending character in the pattern.
    pub offset: usize,
    /// Lowercase, naming what is wrong and what to write.
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GlobError {}

/// Whether `pattern` is a glob: every `[` set closed, every range in order.
pub fn check(pattern: &str) -> Result<(), GlobError> {
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut i = 0;
    while let Some(&(offset, c)) = chars.get(i) {
        if c != '[' {
            i += 1;
            continue;
        }
        let set = &chars[i + 1..];
        let Some(len) = set_len(set.iter().map(|(_, c)| *c)) else {
            return Err(GlobError {
                offset,
                message: "unclosed `[`: close the set with `]`, or write a literal `[` as `[[]`"
                    .into(),
            });
        };
        let body = &set[usize::from(set.first().is_some_and(|(_, c)| *c == '!'))..len];
        let mut j = 0;
        while j < body.len() {
            if let (Some((at, lo)), Some((_, '-')), Some((_, hi))) =
                (body.get(j), body.get(j + 1), body.get(j + 2))
            {
                if lo > hi {
                    return Err(GlobError {
                        offset: *at,
                        message: format!("range `{lo}-{hi}` is reversed: write `{hi}-{lo}`"),
                    });
                }
                j += 3;
            } else {
                j += 1;
            }
        }
        // Past the set and its closing `]`.
        i += 1 + len + 1;
    }
    Ok(())
}

/// Whether `text` matches `pattern` as a whole; false for a pattern [`check`] refuses.
pub fn matches(pattern: &str, text: &str) -> bool {
    if check(pattern).is_err() {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and how much text the `*` has taken.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => {
                let set = &pattern[p + 1..];
                let len = set_len(set.iter().copied()).unwrap_or(set.len());
                in_set(&set[..len], text[t]).then_some(len + 2)
            }
            Some(c) => (*c == text[t]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(n), _) => {
                p += n;
                t += 1;
            }
            (None, Some((resume, taken))) => {
                // Let the last `*` take one more character, and try again after it.
                p = resume;
                t = taken + 1;
                star = Some((resume, taken + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// How many characters of a set's body come before its closing `]` (`set` starts just after
/// the `[`), or None if it is not closed. A `]` first in the body, after an optional `!`, is a
/// member.
fn set_len(set: impl Iterator<Item = char>) -> Option<usize> {
    let mut first = true;
    for (i, c) in set.enumerate() {
        match c {
            '!' if i == 0 => {}
            ']' if !first => return Some(i),
            _ => first = false,
        }
    }
    None
}

/// Whether `c` is in the set whose body (between `[` and `]`) is `body`.
fn in_set(body: &[char], c: char) -> bool {
    let (negated, body) = match body.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, body),
    };
    let mut found = false;
    let mut i = 0;
    while i < body.len() {
        match (body.get(i), body.get(i + 1), body.get(i + 2)) {
            (Some(lo), Some('-'), Some(hi)) => {
                found |= (*lo..=*hi).contains(&c);
                i += 3;
            }
            (Some(m), _, _) => {
                found |= *m == c;
                i += 1;
            }
            _ => break,
        }
    }
    found != negated
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_form_matches() {
        let yes = [
            ("video4linux", "video4linux"),
            ("*Camera*", "HD Pro Webcam Camera C920"),
            ("*", ""),
            ("*", "anything/at all"),
            ("/dev/video*", "/dev/video10"),
            ("/dev/video?", "/dev/video1"),
            ("/dev/*", "/dev/bus/usb/001/002"),
            ("[abc]x", "bx"),
            ("[a-f0-9]*", "046d"),
            ("[!x]", "y"),
            ("[]]", "]"),
            ("[!]]", "a"),
            ("[*]", "*"),
            ("[[]", "["),
            ("[a-]", "-"),
            ("[-a]", "-"),
            ("a*b*c", "abc"),
            ("a*b*c", "a-b-b-c"),
            ("?é?", "aéb"),
            ("**a**", "a"),
        ];
        let no = [
            ("video4linux", "Video4linux"),
            ("video4linux", "video4linux2"),
            ("*Camera*", "HD Webcam"),
            ("/dev/video?", "/dev/video10"),
            ("?", ""),
            ("[abc]x", "dx"),
            ("[!x]", "x"),
            ("[!a-c]", "b"),
            ("a*b*c", "acb"),
            ("[*]", "a"),
            ("", "a"),
        ];
        for (p, t) in yes {
            assert!(matches(p, t), "{p:?} should match {t:?}");
        }
        for (p, t) in no {
            assert!(!matches(p, t), "{p:?} should not match {t:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_their_position() {
        let e = check("/dev/[video").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.starts_with("unclosed `[`"), "{e}");
        assert_eq!(check("ab[]").unwrap_err().offset, 2);
        assert_eq!(check("[!]").unwrap_err().offset, 0);
        let e = check("x[z-a]").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (2, "range `z-a` is reversed: write `a-z`")
        );
        assert_eq!(check("é[b-a]").unwrap_err().offset, 3);
        assert!(!matches("[", "["));
        assert!(!matches("x[z-a]", "x"));
        for ok in ["", "*", "[]]", "[!]]", "[a-]", "a]", "[[]", "[x][y]"] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn hostile_patterns_take_quadratic_time_at_most() {
        let pattern = format!("{}b", "a*".repeat(2_000));
        let text = "a".repeat(4_000);
        assert!(!matches(&pattern, &text));
        assert!(matches(&pattern, &format!("{text}b")));
        let pattern = "*?".repeat(2_000);
        assert!(matches(&pattern, &text));
    }

    /// Reference semantics, by plain recursion over every split (exponential; small inputs).
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some(('[', _)) => {
                let len = set_len(p[1..].iter().copied()).expect("valid patterns only");
                !t.is_empty() && in_set(&p[1..=len], t[0]) && reference(&p[len + 2..], &t[1..])
            }
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    fn pattern() -> impl Strategy<Value = String> {
        let pieces = vec![
            "a", "b", "c", "*", "?", "[ab]", "[!a]", "[a-b]", "[]a]", "[!]]", "]", "!", "-",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..8).prop_map(|ps| ps.concat())
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in pattern(), t in "[abc\\]!-]{0,8}") {
            prop_assert!(check(&p).is_ok(), "{}", p);
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            prop_assert_eq!(matches(&p, &t), reference(&pc, &tc), "{} / {}", p, t);
        }

        #[test]
        fn never_panics(p in "\\PC{0,12}", t in "\\PC{0,12}") {
            if let Err(e) = check(&p) {
                prop_assert!(p.is_char_boundary(e.offset) && e.offset < p.len());
                prop_assert!(!matches(&p, &t));
            } else {
                let _ = matches(&p, &t);
            }
        }
    }
}
