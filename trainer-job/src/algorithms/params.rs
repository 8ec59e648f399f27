use std::collections::BTreeMap;
use std::str::FromStr;

use super::Algorithm;
use crate::error::TrainError;

/// `--param key=value` pairs for one algorithm; unknown keys and unparsable values are errors
/// that list what is accepted.
pub struct Params<'a> {
    algorithm: Algorithm,
    values: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    pub fn new(
        algorithm: Algorithm,
        values: &'a BTreeMap<String, String>,
    ) -> Result<Params<'a>, TrainError> {
        Ok(Params { algorithm, values })
    }

    /// Checks that every given key is one the algorithm accepts
    /// ([`Algorithm::param_keys`], the contract the operator checks too).
    pub fn check_keys(&self) -> Result<(), TrainError> {
        let known = self.algorithm.param_keys();
        if let Some(k) = self.values.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(TrainError::Config(format!(
                "unknown parameter {k:?} for {}; known: {}",
                self.algorithm,
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// The value of `key` or `default`, which must satisfy `valid` (described by `expected`).
    pub fn get<T: FromStr + Copy>(
        &self,
        key: &str,
        default: T,
        expected: &str,
        valid: impl Fn(T) -> bool,
    ) -> Result<T, TrainError> {
        let value = match self.values.get(key) {
            None => default,
            Some(raw) => raw.trim().parse::<T>().map_err(|_| {
                TrainError::Config(format!(
                    "parameter {key}={raw:?} for {}: expected {expected}",
                    self.algorithm
                ))
            })?,
        };
        if !valid(value) {
            return Err(TrainError::Config(format!(
                "parameter {key}={:?} for {}: expected {expected}",
                self.values.get(key).map(String::as_str).unwrap_or(""),
                self.algorithm
            )));
        }
        Ok(value)
    }
}

impl Params<'_> {
    /// The value of a non-numeric `key` (an enum) or `default`.
    pub fn get_parsed<T: FromStr>(
        &self,
        key: &str,
        default: T,
        expected: &str,
    ) -> Result<T, TrainError> {
        match self.values.get(key) {
            None => Ok(default),
            Some(raw) => raw.trim().parse::<T>().map_err(|_| {
                TrainError::Config(format!(
                    "parameter {key}={raw:?} for {}: expected {expected}",
                    self.algorithm
                ))
            }),
        }
    }
}

/// The snake_case spelling of a parameter key: `nEstimators`, `n-estimators`, `N_ESTIMATORS`
/// and `n_estimators` are all `n_estimators` (a ModelPipeline's YAML is camelCase, the
/// trainer's keys are scikit-learn's).
pub fn normalise_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev: Option<char> = None;
    for c in key.trim().chars() {
        if c.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_lowercase()
        });
        prev = Some(c);
    }
    out
}

/// Parses "k=v,k2=v2" or repeated "k=v" items into a map (keys trimmed and in snake_case, see
/// [`normalise_key`]).
pub fn parse_param_items(items: &[String]) -> Result<BTreeMap<String, String>, TrainError> {
    let mut map = BTreeMap::new();
    for item in items.iter().flat_map(|i| i.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').ok_or_else(|| {
            TrainError::Config(format!("parameter {item:?} is not of the form key=value"))
        })?;
        let key = normalise_key(k);
        if map.insert(key.clone(), v.trim().to_string()).is_some() {
            return Err(TrainError::Config(format!(
                "parameter {key:?} is given twice"
            )));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn camel_case_kebab_case_and_upper_case_keys_become_snake_case() {
        for (given, expected) in [
            ("nEstimators", "n_estimators"),
            ("learningRate", "learning_rate"),
            ("maxDepth", "max_depth"),
            ("maxFeatures", "max_features"),
            ("varSmoothing", "var_smoothing"),
            ("gradientTolerance", "gradient_tolerance"),
            ("maxIterations", "max_iterations"),
            ("n_estimators", "n_estimators"),
            ("n-estimators", "n_estimators"),
            ("N_ESTIMATORS", "n_estimators"),
            (" tree ", "tree"),
            ("alpha", "alpha"),
        ] {
            assert_eq!(normalise_key(given), expected, "{given}");
        }
    }

    #[test]
    fn items_parse_into_snake_case_keys_and_a_key_given_twice_in_two_spellings_is_an_error() {
        let map = parse_param_items(&items(&["nEstimators=50,learningRate=0.5", "max_depth=2"]))
            .expect("parses");
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [
                ("learning_rate".to_string(), "0.5".to_string()),
                ("max_depth".to_string(), "2".to_string()),
                ("n_estimators".to_string(), "50".to_string()),
            ]
        );
        let err =
            parse_param_items(&items(&["nEstimators=50", "n_estimators=60"])).expect_err("twice");
        assert_eq!(
            err.to_string(),
            "invalid configuration: parameter \"n_estimators\" is given twice"
        );
        let err = parse_param_items(&items(&["nEstimators"])).expect_err("no value");
        assert!(err.to_string().contains("key=value"), "{err}");
    }
}
