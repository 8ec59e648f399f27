/// Normalises a column or feature name so that the spellings people use for the same column
/// meet: "Fixed Acidity", "fixed_acidity" and " fixed-acidity " all become "fixed_acidity".
///
/// Trims, lowercases, and turns every run of spaces, underscores and hyphens into one `_`.
/// Leading and trailing separators are dropped, so "_id" is "id".
pub fn normalize_feature_name(s: &str) -> String {
    normalized_chars(s).collect()
}

fn is_separator(c: char) -> bool {
    c == ' ' || c == '_' || c == '-' || c.is_whitespace()
}

/// The characters of [`normalize_feature_name`]'s result, lazily and without allocating, so
/// the predictor can match "Fixed Acidity" against "fixed_acidity" on every request for free.
pub fn normalized_chars(raw: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = raw.trim().chars();
    let mut pending_separator = false;
    let mut emitted = false;
    let mut lower: Option<std::char::ToLowercase> = None;
    std::iter::from_fn(move || {
        loop {
            if let Some(l) = lower.as_mut() {
                if let Some(c) = l.next() {
                    emitted = true;
                    return Some(c);
                }
                lower = None;
            }
            let c = chars.next()?;
            if is_separator(c) {
                pending_separator = true;
                continue;
            }
            lower = Some(c.to_lowercase());
            if pending_separator && emitted {
                pending_separator = false;
                return Some('_');
            }
            pending_separator = false;
        }
    })
}

/// Whether `raw` normalises to `normalized` (compared without allocating).
pub fn normalized_eq(raw: &str, normalized: &str) -> bool {
    normalized_chars(raw).eq(normalized.chars())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_column_meet() {
        for s in [
            "fixed acidity",
            "Fixed Acidity",
            "fixed_acidity",
            "FIXED__ACIDITY",
            "  fixed - acidity ",
            "fixed\tacidity",
        ] {
            assert_eq!(normalize_feature_name(s), "fixed_acidity", "{s:?}");
        }
    }

    #[test]
    fn comparing_without_allocating_agrees() {
        assert!(normalized_eq("Fixed Acidity", "fixed_acidity"));
        assert!(normalized_eq(
            "  free  sulfur--dioxide ",
            "free_sulfur_dioxide"
        ));
        assert!(normalized_eq("_Id_", "id"));
        assert!(!normalized_eq("fixed acidity x", "fixed_acidity"));
        assert!(!normalized_eq("fixed", "fixed_acidity"));
        assert_eq!(
            normalize_feature_name("İd"),
            "i\u{307}d",
            "multi-char lowercase kept"
        );
    }

    #[test]
    fn leading_and_trailing_separators_are_dropped() {
        assert_eq!(normalize_feature_name("_Id_"), "id");
        assert_eq!(normalize_feature_name("pH"), "ph");
        assert_eq!(normalize_feature_name(""), "");
    }
}
