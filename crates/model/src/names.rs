/// Normalises a column or feature name so that the spellings people use for the same column
/// meet: "Fixed Acidity", "fixed_acidity" and " fixed-acidity " all become "fixed_acidity".
///
/// Trims, lowercases, and turns every run of spaces, underscores and hyphens into one `_`.
/// Leading and trailing separators are dropped, so "_id" is "id".
pub fn normalize_feature_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_separator = false;
    for c in s.trim().chars() {
        if c == ' ' || c == '_' || c == '-' || c.is_whitespace() {
            pending_separator = true;
            continue;
        }
        if pending_separator && !out.is_empty() {
            out.push('_');
        }
        pending_separator = false;
        out.extend(c.to_lowercase());
    }
    out
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
    fn leading_and_trailing_separators_are_dropped() {
        assert_eq!(normalize_feature_name("_Id_"), "id");
        assert_eq!(normalize_feature_name("pH"), "ph");
        assert_eq!(normalize_feature_name(""), "");
    }
}
