//! Tests on a profile field or event attribute. Text tests are
//! case-insensitive and never match a value that is not a string.

use std::borrow::Cow;

use super::file::MatchFile;
use super::{invalid, ModelError};

/// A value as a matcher sees it, borrowed from an event or a profile.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
    /// null, an array or an object: present, but matches no text, number or bool test.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    /// Any of the (lower-cased) needles.
    Text(TextOp, Vec<String>),
    /// `lo ≤ x` / `lo < x` and `x ≤ hi` / `x < hi`; `whole`: only whole numbers count.
    Range {
        lo: Option<(f64, bool)>,
        hi: Option<(f64, bool)>,
        whole: bool,
    },
    Is(bool),
    Exists(bool),
}

/// Lower-cases only when needed: most values are lower-case ASCII already.
pub fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl TextOp {
    #[inline]
    fn test(self, hay: &str, needle: &str) -> bool {
        match self {
            TextOp::Equals => hay == needle,
            TextOp::Contains => hay.contains(needle),
            TextOp::StartsWith => hay.starts_with(needle),
            TextOp::EndsWith => hay.ends_with(needle),
        }
    }

    /// The same test on an ASCII haystack against a lower-case needle,
    /// without lower-casing (allocating) the haystack.
    #[inline]
    fn test_ascii(self, hay: &[u8], needle: &[u8]) -> bool {
        let eq = |a: &[u8]| a.eq_ignore_ascii_case(needle);
        match self {
            TextOp::Equals => eq(hay),
            TextOp::StartsWith => hay.len() >= needle.len() && eq(&hay[..needle.len()]),
            TextOp::EndsWith => hay.len() >= needle.len() && eq(&hay[hay.len() - needle.len()..]),
            TextOp::Contains => needle.is_empty() || hay.windows(needle.len()).any(eq),
        }
    }
}

impl Matcher {
    pub(super) fn compile(key: &str, m: MatchFile) -> Result<Matcher, ModelError> {
        let text = [
            (TextOp::Equals, m.equals, "equals"),
            (TextOp::Contains, m.contains, "contains"),
            (TextOp::StartsWith, m.starts_with, "starts_with"),
            (TextOp::EndsWith, m.ends_with, "ends_with"),
        ];
        let numeric =
            m.at_least.is_some() || m.above.is_some() || m.at_most.is_some() || m.below.is_some();
        let kinds = text.iter().filter(|t| t.1.is_some()).count()
            + usize::from(numeric)
            + usize::from(m.is.is_some())
            + usize::from(m.exists.is_some());
        if kinds == 0 {
            return Err(invalid(
                key,
                "needs one test: equals, contains, starts_with, ends_with, at_least/above/at_most/below, is or exists",
            ));
        }
        if kinds > 1 {
            return Err(invalid(
                key,
                "has tests of more than one kind; split it into separate rules",
            ));
        }
        if m.whole.is_some() && !numeric {
            return Err(invalid(
                format!("{key}.whole"),
                "applies only to numeric tests",
            ));
        }
        for (op, v, name) in text {
            if let Some(v) = v {
                let v = v.into_vec();
                if v.is_empty() || v.iter().any(|s| s.is_empty()) {
                    return Err(invalid(
                        format!("{key}.{name}"),
                        "needs at least one non-empty string",
                    ));
                }
                return Ok(Matcher::Text(
                    op,
                    v.iter().map(|s| s.to_lowercase()).collect(),
                ));
            }
        }
        if numeric {
            if m.at_least.is_some() && m.above.is_some() {
                return Err(invalid(key, "give at_least or above, not both"));
            }
            if m.at_most.is_some() && m.below.is_some() {
                return Err(invalid(key, "give at_most or below, not both"));
            }
            let lo = m
                .at_least
                .map(|v| (v, true))
                .or(m.above.map(|v| (v, false)));
            let hi = m.at_most.map(|v| (v, true)).or(m.below.map(|v| (v, false)));
            for (v, _) in lo.iter().chain(hi.iter()) {
                if !v.is_finite() {
                    return Err(invalid(key, "bounds must be finite numbers"));
                }
            }
            if let (Some((l, li)), Some((h, hi_inc))) = (lo, hi) {
                if l > h || (l == h && !(li && hi_inc)) {
                    return Err(invalid(
                        key,
                        "the range is empty: its lower bound is not below its upper bound",
                    ));
                }
            }
            return Ok(Matcher::Range {
                lo,
                hi,
                whole: m.whole.unwrap_or(false),
            });
        }
        if let Some(b) = m.is {
            return Ok(Matcher::Is(b));
        }
        Ok(Matcher::Exists(m.exists.unwrap_or(true)))
    }

    /// Whether the value (or its absence) passes the test.
    pub fn test(&self, v: Option<ValueRef<'_>>) -> bool {
        match (self, v) {
            (Matcher::Exists(want), v) => v.is_some() == *want,
            (Matcher::Text(op, needles), Some(ValueRef::Str(s))) if s.is_ascii() => needles
                .iter()
                .any(|n| op.test_ascii(s.as_bytes(), n.as_bytes())),
            (Matcher::Text(op, needles), Some(ValueRef::Str(s))) => {
                let hay = lower(s);
                needles.iter().any(|n| op.test(&hay, n))
            }
            (Matcher::Range { lo, hi, whole }, Some(ValueRef::Num(x))) => {
                if *whole && x.fract() != 0.0 {
                    return false;
                }
                let lo_ok = match lo {
                    None => true,
                    Some((l, true)) => x >= *l,
                    Some((l, false)) => x > *l,
                };
                let hi_ok = match hi {
                    None => true,
                    Some((h, true)) => x <= *h,
                    Some((h, false)) => x < *h,
                };
                lo_ok && hi_ok
            }
            (Matcher::Is(want), Some(ValueRef::Bool(b))) => b == *want,
            _ => false,
        }
    }

    /// A short human description, for explanations.
    pub fn describe(&self) -> String {
        match self {
            Matcher::Text(op, n) => {
                let op = match op {
                    TextOp::Equals => "equals",
                    TextOp::Contains => "contains",
                    TextOp::StartsWith => "starts with",
                    TextOp::EndsWith => "ends with",
                };
                if n.len() == 1 {
                    format!("{op} {:?}", n[0])
                } else {
                    format!("{op} one of {n:?}")
                }
            }
            Matcher::Range { lo, hi, whole } => {
                let mut parts = Vec::new();
                if let Some((l, inc)) = lo {
                    parts.push(format!("{} {l}", if *inc { ">=" } else { ">" }));
                }
                if let Some((h, inc)) = hi {
                    parts.push(format!("{} {h}", if *inc { "<=" } else { "<" }));
                }
                let s = parts.join(" and ");
                if *whole {
                    format!("{s} (whole numbers)")
                } else {
                    s
                }
            }
            Matcher::Is(b) => format!("is {b}"),
            Matcher::Exists(true) => "is present".into(),
            Matcher::Exists(false) => "is absent".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(op: TextOp, n: &[&str]) -> Matcher {
        Matcher::Text(op, n.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn text_is_case_insensitive_and_only_for_strings() {
        let m = text(TextOp::Contains, &["director of operations"]);
        assert!(m.test(Some(ValueRef::Str("Global DIRECTOR of Operations"))));
        assert!(!m.test(Some(ValueRef::Str("director"))));
        assert!(!m.test(Some(ValueRef::Num(1.0))));
        assert!(!m.test(None));
        let m = text(TextOp::Equals, &["food", "pharma"]);
        assert!(m.test(Some(ValueRef::Str("Pharma"))));
        assert!(!m.test(Some(ValueRef::Str("pharmacy"))));
        let m = text(TextOp::Equals, &["straße"]);
        assert!(m.test(Some(ValueRef::Str("STRAßE"))));
    }

    #[test]
    fn ranges_and_whole_numbers() {
        let m = Matcher::Range {
            lo: Some((50.0, true)),
            hi: Some((200.0, false)),
            whole: true,
        };
        assert!(m.test(Some(ValueRef::Num(50.0))));
        assert!(m.test(Some(ValueRef::Num(199.0))));
        assert!(!m.test(Some(ValueRef::Num(200.0))));
        assert!(!m.test(Some(ValueRef::Num(120.5))));
        assert!(!m.test(Some(ValueRef::Str("120"))));
    }

    #[test]
    fn bool_and_presence() {
        assert!(Matcher::Is(true).test(Some(ValueRef::Bool(true))));
        assert!(!Matcher::Is(true).test(Some(ValueRef::Str("true"))));
        assert!(Matcher::Exists(true).test(Some(ValueRef::Other)));
        assert!(Matcher::Exists(false).test(None));
    }
}
