//! Reading CSV objects into one table: header normalisation, dropped columns, the target
//! (as labels or binarised by a threshold), exact-duplicate removal across objects, and
//! errors that name the object and line.

use std::collections::{HashMap, HashSet};

use champion_model::normalize_feature_name;

use crate::error::TrainError;

/// How to read the CSV objects.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Target column (any spelling; compared after normalisation).
    pub target: String,
    /// Binarise the target: label "1" when the value is above this, "0" otherwise.
    pub positive_above: Option<f64>,
    /// Columns to ignore (any spelling). Each must exist in every object.
    pub drop: Vec<String>,
    /// Skip and count bad rows instead of failing on the first one.
    pub skip_bad_rows: bool,
}

/// Rows read from one or more objects, merged.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Normalised feature names, in the first object's column order.
    pub feature_names: Vec<String>,
    /// Row-major feature values, `feature_names.len()` per row.
    pub values: Vec<f64>,
    /// The target of each row as read (numbers in canonical form), before binarisation.
    pub targets: Vec<String>,
    /// The class label of each row (the target, or "0"/"1" when binarised).
    pub labels: Vec<String>,
    pub dropped_duplicates: u64,
    pub skipped: u64,
}

impl Table {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// The raw feature values of row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        let f = self.n_features();
        &self.values[i * f..(i + 1) * f]
    }

    /// Identity of a row's content (features and target; dropped columns excluded), used to
    /// keep fixed test rows out of training.
    pub fn content_key(&self, i: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.n_features() * 8 + 8);
        for v in self.row(i) {
            key.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        key.extend_from_slice(self.targets[i].as_bytes());
        key
    }
}

/// Accumulates objects into a [`Table`]. The first object fixes the feature columns; every
/// later object must have the same columns (in any order and spelling).
pub struct TableReader {
    options: ReadOptions,
    target: String,
    drop: Vec<String>,
    table: Table,
    seen: HashSet<Vec<u8>>,
    schema_source: Option<String>,
}

/// Labels "0"/"1" of a binarised target, and the positive one.
pub const NEGATIVE_LABEL: &str = "0";
pub const POSITIVE_LABEL: &str = "1";

struct RowError {
    line: u64,
    reason: String,
}

impl TableReader {
    pub fn new(options: ReadOptions) -> Result<TableReader, TrainError> {
        let target = normalize_feature_name(&options.target);
        if target.is_empty() {
            return Err(TrainError::Config("the target column name is empty".into()));
        }
        let drop: Vec<String> = options
            .drop
            .iter()
            .map(|d| normalize_feature_name(d))
            .filter(|d| !d.is_empty())
            .collect();
        if drop.contains(&target) {
            return Err(TrainError::Config(format!(
                "the target column {target:?} is also listed to drop"
            )));
        }
        if let Some(t) = options.positive_above
            && !t.is_finite()
        {
            return Err(TrainError::Config(format!(
                "--positive-above must be a finite number, got {t}"
            )));
        }
        Ok(TableReader {
            options,
            target,
            drop,
            table: Table::default(),
            seen: HashSet::new(),
            schema_source: None,
        })
    }

    /// Starts from the feature columns of another table (so a fixed test set is read in the
    /// training data's column order).
    pub fn with_features(mut self, feature_names: &[String], source: &str) -> TableReader {
        self.table.feature_names = feature_names.to_vec();
        self.schema_source = Some(source.to_string());
        self
    }

    pub fn finish(self) -> Table {
        self.table
    }

    /// Reads one CSV object. `object` is its URI, used in every message.
    pub fn read_object(&mut self, object: &str, bytes: &[u8]) -> Result<(), TrainError> {
        let header_err = |reason: String| TrainError::Header {
            object: object.to_string(),
            reason,
        };
        // Excel and PowerShell write a UTF-8 byte order mark; it is not part of the first name.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(header_err(
                "the object is empty (expected a header row and data rows)".into(),
            ));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|e| header_err(format!("cannot read the header row: {e}")))?
            .clone();
        let names: Vec<String> = header.iter().map(normalize_feature_name).collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(header_err(format!("column {} has an empty name", i + 1)));
            }
            if index.insert(n.as_str(), i).is_some() {
                return Err(header_err(format!(
                    "column {n:?} appears twice in the header (after normalising case, spaces and underscores)"
                )));
            }
        }
        let target_col = *index.get(self.target.as_str()).ok_or_else(|| {
            header_err(format!(
                "no target column {:?}; the header has {}",
                self.options.target,
                names.join(", ")
            ))
        })?;
        let mut drop_cols = Vec::with_capacity(self.drop.len());
        for d in &self.drop {
            let col = index.get(d.as_str()).ok_or_else(|| {
                header_err(format!(
                    "column {d:?} to drop is not in the header ({})",
                    names.join(", ")
                ))
            })?;
            drop_cols.push(*col);
        }
        let features: Vec<&String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target_col && !drop_cols.contains(i))
            .map(|(_, n)| n)
            .collect();
        if self.schema_source.is_none() {
            if features.is_empty() {
                return Err(header_err(
                    "no feature columns besides the target and the dropped columns".into(),
                ));
            }
            self.table.feature_names = features.iter().map(|n| n.to_string()).collect();
            self.schema_source = Some(object.to_string());
        }
        let source = self.schema_source.clone().unwrap_or_default();
        let mut feature_cols = Vec::with_capacity(self.table.n_features());
        for name in &self.table.feature_names {
            let col = index
                .get(name.as_str())
                .ok_or_else(|| header_err(format!("has no column {name:?}, which {source} has")))?;
            feature_cols.push(*col);
        }
        if let Some(extra) = features
            .iter()
            .find(|n| !self.table.feature_names.contains(n))
        {
            return Err(header_err(format!(
                "has a column {extra:?} that {source} does not have; drop it or make the objects agree"
            )));
        }

        let n_fields = names.len();
        let mut data_rows = 0u64;
        let mut record = csv::StringRecord::new();
        let mut lines = LineCounter::new(bytes);
        let mut row_values = vec![0.0; feature_cols.len()];
        loop {
            let line_hint = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e
                        .position()
                        .map(|p| lines.line_at(p.byte()))
                        .unwrap_or(line_hint);
                    let err = RowError {
                        line,
                        reason: format!("cannot read the row: {e}"),
                    };
                    if self.options.skip_bad_rows {
                        self.table.skipped += 1;
                        continue;
                    }
                    return Err(row_error(object, err));
                }
            }
            let line = record
                .position()
                .map(|p| lines.line_at(p.byte()))
                .unwrap_or(line_hint);
            if record.len() == 1 && record.get(0) == Some("") {
                continue; // a blank line
            }
            data_rows += 1;
            match self.parse_row(
                &record,
                line,
                n_fields,
                &names,
                &feature_cols,
                target_col,
                &mut row_values,
            ) {
                Ok((target, label)) => {
                    let mut key = Vec::with_capacity(row_values.len() * 8 + 32);
                    for v in &row_values {
                        key.extend_from_slice(&v.to_bits().to_le_bytes());
                    }
                    key.extend_from_slice(target.as_bytes());
                    // Dropped columns are part of the identity of a record: two wines with
                    // equal measurements but different Ids are two records; the same record
                    // delivered twice is one.
                    for &c in &drop_cols {
                        key.push(0);
                        key.extend_from_slice(record.get(c).unwrap_or("").as_bytes());
                    }
                    if !self.seen.insert(key) {
                        self.table.dropped_duplicates += 1;
                        continue;
                    }
                    self.table.values.extend_from_slice(&row_values);
                    self.table.targets.push(target);
                    self.table.labels.push(label);
                }
                Err(err) if self.options.skip_bad_rows => {
                    tracing::warn!(object, line = err.line, reason = %err.reason, "skipping bad row");
                    self.table.skipped += 1;
                }
                Err(err) => return Err(row_error(object, err)),
            }
        }
        if data_rows == 0 {
            return Err(header_err("has a header row but no data rows".to_string()));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_row(
        &self,
        record: &csv::StringRecord,
        line: u64,
        n_fields: usize,
        names: &[String],
        feature_cols: &[usize],
        target_col: usize,
        out: &mut [f64],
    ) -> Result<(String, String), RowError> {
        let err = |reason: String| RowError { line, reason };
        if record.len() != n_fields {
            return Err(err(format!(
                "has {} fields, the header has {n_fields}",
                record.len()
            )));
        }
        for (slot, &col) in out.iter_mut().zip(feature_cols) {
            let raw = record.get(col).unwrap_or("");
            *slot =
                parse_number(raw).map_err(|why| err(format!("column {:?} {why}", names[col])))?;
        }
        let raw_target = record.get(target_col).unwrap_or("");
        if raw_target.is_empty() {
            return Err(err(format!(
                "target column {:?} is empty",
                names[target_col]
            )));
        }
        match self.options.positive_above {
            Some(threshold) => {
                let v = parse_number(raw_target)
                    .map_err(|why| err(format!("target column {:?} {why}", names[target_col])))?;
                let label = if v > threshold {
                    POSITIVE_LABEL
                } else {
                    NEGATIVE_LABEL
                };
                Ok((canonical_number(v), label.to_string()))
            }
            None => {
                let target = match raw_target.parse::<f64>() {
                    Ok(v) if v.is_finite() => canonical_number(v),
                    _ => raw_target.to_string(),
                };
                Ok((target.clone(), target))
            }
        }
    }
}

/// Line numbers from byte offsets: the csv crate's own line count is off by one per CRLF line
/// end, and users open the file in an editor that counts `\n`.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line of byte `offset` (offsets only grow while a file is read).
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut offset = (offset as usize).min(self.bytes.len());
        // With CRLF the csv crate reports a record as starting at the '\n' of the previous
        // line end; a record never starts with a line-end byte, so step over them.
        while offset < self.bytes.len() && matches!(self.bytes[offset], b'\r' | b'\n') {
            offset += 1;
        }
        if offset >= self.offset {
            self.line += self.bytes[self.offset..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.offset = offset;
        }
        self.line
    }
}

fn row_error(object: &str, err: RowError) -> TrainError {
    TrainError::Row {
        object: object.to_string(),
        line: err.line,
        reason: err.reason,
    }
}

/// Parses one numeric cell; the error says what was found.
fn parse_number(raw: &str) -> Result<f64, String> {
    if raw.is_empty() {
        return Err("is empty (missing value)".into());
    }
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("is {raw:?}, expected a finite number")),
        Err(_) => Err(format!("is {raw:?}, expected a number")),
    }
}

/// "5", "5.0" and "5.00" are one label.
fn canonical_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Sorts labels numerically when they all are numbers, otherwise as strings.
pub fn sort_labels(labels: &mut [String]) {
    let numeric: Option<Vec<f64>> = labels.iter().map(|l| l.parse::<f64>().ok()).collect();
    if numeric.is_some() {
        labels.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    } else {
        labels.sort();
    }
}
