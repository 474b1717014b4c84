//! Shell-style globs for device-class rules: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
//!
//! Matching keeps one backtrack point (the last `*`), so it takes time proportional to the
//! pattern times the text at worst, never exponential, whatever a hostile pattern holds. An
//! unclosed `[` matches itself, as in the shell.

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, the text it swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some('[') => {
                if let Some((hit, next)) = class(&p, pi, t[ti]) {
                    if hit {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                } else if t[ti] == '[' {
                    pi += 1;
                    ti += 1;
                    continue;
                }
            }
            Some(c) if *c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after, swallowed)) => {
                pi = after;
                ti = swallowed + 1;
                star = Some((after, swallowed + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The class opening at `p[at]` (a `[`): whether `c` is in it, and where the pattern goes on.
/// `None` when the class is never closed.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negated = matches!(p.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((hit != negated, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|hi| *hi != ']') {
            let hi = p[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_and_classes() {
        assert!(matches("/dev/video*", "/dev/video0"));
        assert!(matches("*Camera*", "HD Pro Camera C920"));
        assert!(!matches("*Camera*", "HD Pro Webcam"));
        assert!(matches("video?", "video1"));
        assert!(!matches("video?", "video10"));
        assert!(matches("ttyUSB[0-3]", "ttyUSB2"));
        assert!(!matches("ttyUSB[0-3]", "ttyUSB7"));
        assert!(matches("ttyUSB[!0-3]", "ttyUSB7"));
        assert!(matches("[]]", "]"));
        assert!(matches("a[b", "a[b"), "an unclosed class matches itself");
        assert!(matches("", ""));
        assert!(!matches("", "x"));
        assert!(matches("***", ""));
    }

    #[test]
    fn a_hostile_pattern_is_quick() {
        let pattern = "*a".repeat(200) + "b";
        let text = "a".repeat(5000);
        assert!(!matches(&pattern, &text));
    }

    /// The obvious recursive definition, exponential but right, on patterns of `*`, `?` and
    /// letters.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|k| reference(&p[1..], &t[k..])),
            Some('?') => !t.is_empty() && reference(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && reference(&p[1..], &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            prop_assert_eq!(matches(&p, &t), reference(&pc, &tc));
        }

        #[test]
        fn never_panics(p in "\\PC{0,20}", t in "\\PC{0,20}") {
            let _ = matches(&p, &t);
        }
    }
}
