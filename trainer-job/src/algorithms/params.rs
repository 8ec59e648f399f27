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

/// Parses "k=v,k2=v2" or repeated "k=v" items into a map (keys trimmed and lowercased).
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
        let key = k.trim().to_ascii_lowercase().replace('-', "_");
        if map.insert(key.clone(), v.trim().to_string()).is_some() {
            return Err(TrainError::Config(format!(
                "parameter {key:?} is given twice"
            )));
        }
    }
    Ok(map)
}
