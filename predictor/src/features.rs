//! Feature-name normalisation without allocation, so a client that sends "Fixed Acidity" costs
//! no more than one that sends "fixed_acidity". Must agree with
//! `champion_model::normalize_feature_name`; a property test checks that it does.

fn is_separator(c: char) -> bool {
    c == ' ' || c == '_' || c == '-' || c.is_whitespace()
}

/// The characters of the normalised form of `raw`, lazily: lowercase, each run of separators
/// between two kept characters becomes one `_`, leading and trailing separators vanish.
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

/// Whether `raw` normalises to `normalized`.
pub fn normalized_eq(raw: &str, normalized: &str) -> bool {
    normalized_chars(raw).eq(normalized.chars())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples_from_the_contract() {
        assert!(normalized_eq("Fixed Acidity", "fixed_acidity"));
        assert!(normalized_eq(
            "  free  sulfur--dioxide ",
            "free_sulfur_dioxide"
        ));
        assert!(normalized_eq("pH", "ph"));
        assert!(normalized_eq("_Id_", "id"));
        assert!(normalized_eq("fixed\tacidity", "fixed_acidity"));
        assert!(!normalized_eq("fixed acidity x", "fixed_acidity"));
        assert!(!normalized_eq("fixed", "fixed_acidity"));
    }

    proptest! {
        #[test]
        fn agrees_with_the_trainer(raw in "[ _\\-a-zA-Z0-9ÄÖİß\t\u{3000}]{0,24}") {
            let expected = champion_model::normalize_feature_name(&raw);
            let got: String = normalized_chars(&raw).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
