//! Request bodies → rows of feature values, straight from the bytes (serde_json from a slice
//! with hand-written visitors): no intermediate `Value`, no per-key allocation, and every value
//! lands in a reused row-major buffer in the model's feature order.
//!
//! Errors are split the way a client can act on them: the JSON itself is broken (400), or it
//! is valid JSON that does not describe rows this model can score (422).

use std::fmt;

use http::StatusCode;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use crate::model::ServedModel;

/// A request the predictor refuses, with the status and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError {
    pub status: StatusCode,
    pub message: String,
}

impl InputError {
    pub fn unprocessable(message: impl Into<String>) -> Self {
        InputError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        InputError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// Buffers reused across requests on one worker thread.
#[derive(Default)]
pub struct Scratch {
    /// Row-major feature values of every row of the current request.
    pub values: Vec<f64>,
    seen: Vec<bool>,
    /// Class probabilities of every row of the current request.
    pub proba: Vec<f64>,
}

/// Keep at most this many f64 per buffer between requests, so one huge batch does not pin
/// megabytes per worker thread for the life of the process.
const RETAINED_VALUES: usize = 64 * 1024;

impl Scratch {
    pub fn release_oversized(&mut self) {
        if self.values.capacity() > RETAINED_VALUES {
            self.values = Vec::new();
        }
        if self.proba.capacity() > RETAINED_VALUES {
            self.proba = Vec::new();
        }
    }
}

struct Ctx<'a> {
    model: &'a ServedModel,
    values: &'a mut Vec<f64>,
    seen: &'a mut Vec<bool>,
    rows: usize,
    error: Option<InputError>,
}

impl<'a> Ctx<'a> {
    fn new(model: &'a ServedModel, scratch: &'a mut Scratch) -> Self {
        scratch.values.clear();
        Ctx {
            model,
            values: &mut scratch.values,
            seen: &mut scratch.seen,
            rows: 0,
            error: None,
        }
    }

    /// Records the precise reason and returns an opaque serde error that unwinds the parse.
    fn fail<E: de::Error>(&mut self, message: String) -> E {
        self.error = Some(InputError::unprocessable(message));
        E::custom("input rejected")
    }

    fn finish(&mut self, result: Result<(), serde_json::Error>) -> Result<(), InputError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error.take().unwrap_or_else(|| classify(&e))),
        }
    }
}

fn classify(e: &serde_json::Error) -> InputError {
    let text = e.to_string();
    match e.classify() {
        Category::Data => InputError::unprocessable(text),
        // serde_json reports 1e400 as a syntax error; for a client it is a non-finite number.
        Category::Syntax if text.starts_with("number out of range") => {
            InputError::unprocessable(format!("non-finite number: {text}"))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            InputError::bad_request(format!("malformed JSON: {text}"))
        }
    }
}

fn run<'a, F>(body: &'a [u8], ctx: &mut Ctx<'_>, f: F) -> Result<(), InputError>
where
    F: FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
        &mut Ctx<'_>,
    ) -> Result<(), serde_json::Error>,
{
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = f(&mut de, ctx).and_then(|()| de.end());
    let result = ctx.finish(result);
    if let Err(e) = &result
        && e.status == StatusCode::UNPROCESSABLE_ENTITY
    {
        // The parse stopped at the first thing this model cannot use; if the document is not
        // even valid JSON further on, that is what the client must fix first.
        let whole: Result<IgnoredAny, _> = serde_json::from_slice(body);
        if let Err(syntax) = whole
            && syntax.classify() != Category::Data
        {
            return Err(classify(&syntax));
        }
    }
    result
}

/// `/predict`: one object of feature → number, or a list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictShape {
    Single,
    List,
}

/// Parses a `/predict` body into `scratch.values`; returns the shape to answer in.
pub fn parse_predict(
    body: &[u8],
    model: &ServedModel,
    scratch: &mut Scratch,
) -> Result<PredictShape, InputError> {
    let mut ctx = Ctx::new(model, scratch);
    let mut shape = PredictShape::Single;
    run(body, &mut ctx, |de, ctx| {
        shape = de::Deserializer::deserialize_any(de, PredictTop(ctx))?;
        Ok(())
    })?;
    Ok(shape)
}

/// KServe v1: `{"instances": [row, …]}`, each row an array in feature order or an object.
pub fn parse_v1(body: &[u8], model: &ServedModel, scratch: &mut Scratch) -> Result<(), InputError> {
    let mut ctx = Ctx::new(model, scratch);
    run(body, &mut ctx, |de, ctx| {
        de::Deserializer::deserialize_map(de, V1Top(ctx))
    })
}

/// Which outputs a v2 client asked for (all when it names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Outputs {
    pub label: bool,
    pub probabilities: bool,
}

pub const V2_LABEL_OUTPUT: &str = "label";
pub const V2_PROBA_OUTPUT: &str = "probabilities";
pub const V2_INPUT: &str = "input-0";

#[derive(Debug, Clone, PartialEq)]
pub struct V2Request {
    pub id: Option<String>,
    pub outputs: V2Outputs,
}

/// Open Inference Protocol v2: one FP32/FP64 input tensor of shape [N, features].
pub fn parse_v2(
    body: &[u8],
    model: &ServedModel,
    scratch: &mut Scratch,
) -> Result<V2Request, InputError> {
    let mut ctx = Ctx::new(model, scratch);
    let mut req = V2Request {
        id: None,
        outputs: V2Outputs {
            label: true,
            probabilities: true,
        },
    };
    run(body, &mut ctx, |de, ctx| {
        req = de::Deserializer::deserialize_map(de, V2Top(ctx))?;
        Ok(())
    })?;
    Ok(req)
}

// ---- rows as objects -------------------------------------------------------------------

fn read_object_row<'de, A: MapAccess<'de>>(ctx: &mut Ctx<'_>, mut map: A) -> Result<(), A::Error> {
    let n = ctx.model.n_features();
    let start = ctx.values.len();
    ctx.values.resize(start + n, 0.0);
    ctx.seen.clear();
    ctx.seen.resize(n, false);
    while let Some(idx) = map.next_key_seed(FeatureKey(ctx))? {
        if ctx.seen[idx] {
            let msg = format!(
                "feature '{}' given twice in row {}",
                ctx.model.meta.feature_names[idx], ctx.rows
            );
            return Err(ctx.fail(msg));
        }
        let v = map.next_value_seed(Number { ctx, feature: idx })?;
        ctx.values[start + idx] = v;
        ctx.seen[idx] = true;
    }
    if ctx.seen.iter().any(|s| !s) {
        let missing: Vec<&str> = ctx
            .seen
            .iter()
            .zip(&ctx.model.meta.feature_names)
            .filter(|(s, _)| !**s)
            .map(|(_, f)| f.as_str())
            .collect();
        let msg = format!(
            "missing feature(s) {} in row {}",
            missing.join(", "),
            ctx.rows
        );
        return Err(ctx.fail(msg));
    }
    ctx.rows += 1;
    Ok(())
}

struct FeatureKey<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for FeatureKey<'_, '_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FeatureKey<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        match self.0.model.feature_index(v) {
            Some(i) => Ok(i),
            None => {
                let msg = format!("unknown feature '{}' in row {}", v, self.0.rows);
                Err(self.0.fail(msg))
            }
        }
    }
}

struct Number<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    feature: usize,
}

impl<'de> DeserializeSeed<'de> for Number<'_, '_> {
    type Value = f64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_f64(self)
    }
}

impl<'de> Visitor<'de> for Number<'_, '_> {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a finite number for feature '{}' in row {}",
            self.ctx.model.meta.feature_names[self.feature], self.ctx.rows
        )
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() {
            Ok(v)
        } else {
            let msg = format!(
                "non-finite number for feature '{}' in row {}",
                self.ctx.model.meta.feature_names[self.feature], self.ctx.rows
            );
            Err(self.ctx.fail(msg))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

// ---- /predict --------------------------------------------------------------------------

struct PredictTop<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> Visitor<'de> for PredictTop<'_, '_> {
    type Value = PredictShape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of feature name → number, or a list of such objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PredictShape, A::Error> {
        read_object_row(self.0, map)?;
        Ok(PredictShape::Single)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PredictShape, A::Error> {
        while seq.next_element_seed(ObjectRow(self.0))?.is_some() {}
        Ok(PredictShape::List)
    }
}

struct ObjectRow<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for ObjectRow<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectRow<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "row {} as an object of feature name → number",
            self.0.rows
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_object_row(self.0, map)
    }
}

// ---- rows as arrays --------------------------------------------------------------------

fn read_array_row<'de, A: SeqAccess<'de>>(ctx: &mut Ctx<'_>, mut seq: A) -> Result<(), A::Error> {
    let n = ctx.model.n_features();
    let mut count = 0;
    loop {
        if count == n {
            // One element past the end is enough to know the arity is wrong.
            if seq.next_element::<IgnoredAny>()?.is_some() {
                let msg = format!(
                    "row {} has more than {n} values; expected {n} in feature order",
                    ctx.rows
                );
                return Err(ctx.fail(msg));
            }
            break;
        }
        match seq.next_element_seed(Number {
            ctx: &mut *ctx,
            feature: count,
        })? {
            Some(v) => {
                ctx.values.push(v);
                count += 1;
            }
            None => {
                let msg = format!(
                    "row {} has {count} values; expected {n} in feature order",
                    ctx.rows
                );
                return Err(ctx.fail(msg));
            }
        }
    }
    ctx.rows += 1;
    Ok(())
}

// ---- KServe v1 -------------------------------------------------------------------------

struct V1Top<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> Visitor<'de> for V1Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with \"instances\": a list of rows")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<KeyName>()? {
            if key.0 == "instances" {
                if found {
                    return Err(self.0.fail("\"instances\" given twice".into()));
                }
                map.next_value_seed(Instances(self.0))?;
                found = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found {
            return Err(self
                .0
                .fail("missing \"instances\": expected a list of rows (arrays in feature order or objects)".into()));
        }
        Ok(())
    }
}

/// An object key, borrowed when the input allows it.
struct KeyName(std::borrow::Cow<'static, str>);

impl<'de> de::Deserialize<'de> for KeyName {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                // Known keys map to static strings; others are only ever skipped.
                let known: &'static str = match v {
                    "instances" => "instances",
                    "id" => "id",
                    "inputs" => "inputs",
                    "outputs" => "outputs",
                    "name" => "name",
                    "shape" => "shape",
                    "datatype" => "datatype",
                    "data" => "data",
                    _ => "",
                };
                Ok(KeyName(std::borrow::Cow::Borrowed(known)))
            }
        }
        d.deserialize_str(V)
    }
}

struct Instances<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Instances<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Instances<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"instances\" as a list of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Instance(self.0))?.is_some() {}
        Ok(())
    }
}

struct Instance<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Instance<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Instance<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "instance {} as an array of {} numbers in feature order or an object of feature name → number",
            self.0.rows,
            self.0.model.n_features()
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        read_array_row(self.0, seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_object_row(self.0, map)
    }
}

// ---- Open Inference Protocol v2 --------------------------------------------------------

struct V2Top<'c, 'a>(&'c mut Ctx<'a>);

#[derive(serde::Deserialize)]
struct RequestedOutput {
    name: String,
}

impl<'de> Visitor<'de> for V2Top<'_, '_> {
    type Value = V2Request;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object with \"inputs\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V2Request, A::Error> {
        let ctx = self.0;
        let mut id = None;
        let mut outputs = None;
        let mut inputs = false;
        while let Some(key) = map.next_key::<KeyName>()? {
            match &*key.0 {
                "id" => id = Some(map.next_value::<String>()?),
                "inputs" => {
                    if inputs {
                        return Err(ctx.fail("\"inputs\" given twice".into()));
                    }
                    map.next_value_seed(Inputs(ctx))?;
                    inputs = true;
                }
                "outputs" => outputs = Some(map.next_value::<Vec<RequestedOutput>>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !inputs {
            return Err(ctx.fail(format!(
                "missing \"inputs\": expected one FP32 or FP64 tensor of shape [N, {}]",
                ctx.model.n_features()
            )));
        }
        let outputs = match outputs {
            None => V2Outputs {
                label: true,
                probabilities: true,
            },
            Some(list) if list.is_empty() => V2Outputs {
                label: true,
                probabilities: true,
            },
            Some(list) => {
                let mut sel = V2Outputs {
                    label: false,
                    probabilities: false,
                };
                for o in list {
                    match o.name.as_str() {
                        V2_LABEL_OUTPUT => sel.label = true,
                        V2_PROBA_OUTPUT => sel.probabilities = true,
                        other => {
                            return Err(ctx.fail(format!(
                                "unknown output '{other}'; this model has outputs '{V2_LABEL_OUTPUT}' and '{V2_PROBA_OUTPUT}'"
                            )));
                        }
                    }
                }
                sel
            }
        };
        Ok(V2Request { id, outputs })
    }
}

struct Inputs<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Inputs<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Inputs<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"inputs\" as a list of one tensor")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.0;
        if seq.next_element_seed(Tensor(ctx))?.is_none() {
            let msg = format!(
                "\"inputs\" is empty; expected one FP32 or FP64 tensor of shape [N, {}]",
                ctx.model.n_features()
            );
            return Err(ctx.fail(msg));
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            let msg = format!(
                "\"inputs\" has more than one tensor; expected one FP32 or FP64 tensor of shape [N, {}]",
                ctx.model.n_features()
            );
            return Err(ctx.fail(msg));
        }
        Ok(())
    }
}

struct Tensor<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Tensor<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tensor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor object with \"name\", \"shape\", \"datatype\" and \"data\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let n = ctx.model.n_features();
        let mut shape: Option<Vec<u64>> = None;
        let mut datatype: Option<String> = None;
        let mut data = false;
        while let Some(key) = map.next_key::<KeyName>()? {
            match &*key.0 {
                "shape" => shape = Some(map.next_value()?),
                "datatype" => datatype = Some(map.next_value()?),
                "data" => {
                    if data {
                        return Err(ctx.fail("tensor \"data\" given twice".into()));
                    }
                    // serde_json checks the JSON grammar while skipping the raw value; the
                    // numbers are then read by `read_flat_numbers`, several times faster than
                    // serde_json's exact-roundtrip float parser on a 1,000-row tensor.
                    let raw: &serde_json::value::RawValue = map.next_value()?;
                    if let Err(msg) = read_flat_numbers(raw.get(), ctx.values) {
                        return Err(ctx.fail(msg));
                    }
                    data = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let expected = || format!("expected shape [N, {n}] (one column per feature)");
        match datatype.as_deref() {
            Some("FP64" | "FP32") => {}
            Some(other) => {
                return Err(ctx.fail(format!(
                    "unsupported datatype '{other}'; expected FP32 or FP64"
                )));
            }
            None => {
                return Err(ctx.fail("tensor has no \"datatype\"; expected FP32 or FP64".into()));
            }
        }
        let Some(shape) = shape else {
            return Err(ctx.fail(format!("tensor has no \"shape\"; {}", expected())));
        };
        if !data {
            return Err(ctx.fail("tensor has no \"data\"".into()));
        }
        if shape.len() != 2 || shape[1] != n as u64 {
            return Err(ctx.fail(format!("tensor shape {shape:?}; {}", expected())));
        }
        let got = ctx.values.len() as u64;
        if shape[0].checked_mul(n as u64) != Some(got) {
            return Err(ctx.fail(format!(
                "tensor shape {shape:?} needs {} values but \"data\" has {got}",
                shape[0].saturating_mul(n as u64)
            )));
        }
        ctx.rows = ctx.values.len() / n;
        Ok(())
    }
}

/// Tensor data, already known to be valid JSON: flat row-major or nested arrays of numbers,
/// flattened into `values`. Every number is correctly rounded (the same f64 serde_json
/// produces): short decimals take the exact fast path, anything else the standard library's
/// parser.
pub fn read_flat_numbers(text: &str, values: &mut Vec<f64>) -> Result<(), String> {
    let b = text.as_bytes();
    let not_number = |at: usize| {
        format!(
            "tensor data element {at} is not a number; expected (nested) arrays of finite numbers"
        )
    };
    if b.first() != Some(&b'[') {
        return Err(
            "tensor \"data\" is not an array; expected (nested) arrays of finite numbers".into(),
        );
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'[' | b']' | b',' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'-' | b'0'..=b'9' => {
                let start = i;
                let (v, end) = match fast_decimal(b, i) {
                    Some(found) => found,
                    None => {
                        let mut end = i;
                        while end < b.len()
                            && matches!(b[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                        {
                            end += 1;
                        }
                        let v: f64 = text[start..end]
                            .parse()
                            .map_err(|_| not_number(values.len()))?;
                        (v, end)
                    }
                };
                if !v.is_finite() {
                    return Err(format!(
                        "non-finite number {} at tensor element {}",
                        &text[start..end],
                        values.len()
                    ));
                }
                values.push(v);
                i = end;
            }
            _ => return Err(not_number(values.len())),
        }
    }
    Ok(())
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Clinger's fast path: `-?digits[.digits]` with at most 15 significant digits is
/// `mantissa / 10^fraction_digits`, where both operands are exact and IEEE division rounds
/// correctly. Returns the value and the index after the number, or `None` for every other
/// form (exponents, long mantissas), which the caller hands to the full parser.
fn fast_decimal(b: &[u8], mut i: usize) -> Option<(f64, usize)> {
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    let mut fraction = 0usize;
    let mut seen_dot = false;
    let mut any = false;
    while i < b.len() {
        match b[i] {
            d @ b'0'..=b'9' => {
                if mantissa != 0 || d != b'0' {
                    digits += 1;
                }
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                if seen_dot {
                    fraction += 1;
                }
                any = true;
            }
            b'.' if !seen_dot => seen_dot = true,
            b'e' | b'E' | b'+' | b'-' | b'.' => return None,
            _ => break,
        }
        i += 1;
    }
    if !any || digits > 15 || fraction >= POW10.len() {
        return None;
    }
    let v = mantissa as f64 / POW10[fraction];
    Some((if negative { -v } else { v }, i))
}

/// Rows parsed by the last call.
pub fn rows(scratch: &Scratch, model: &ServedModel) -> usize {
    scratch.values.len() / model.n_features()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;

    fn predict(body: &str) -> Result<(PredictShape, Vec<f64>), InputError> {
        let m = sum_model();
        let mut s = Scratch::default();
        let shape = parse_predict(body.as_bytes(), &m, &mut s)?;
        Ok((shape, s.values))
    }

    #[test]
    fn predict_single_object_in_feature_order() {
        let (shape, v) = predict(r#"{"ph": 3, "Fixed Acidity": 2.5, "alcohol": -1e2}"#).unwrap();
        assert_eq!(shape, PredictShape::Single);
        assert_eq!(v, vec![-100.0, 2.5, 3.0]);
    }

    #[test]
    fn predict_list_of_objects() {
        let (shape, v) = predict(
            r#"[{"ph": 1, "fixed_acidity": 2, "alcohol": 3}, {"ph": 4, "fixed_acidity": 5, "alcohol": 6}]"#,
        )
        .unwrap();
        assert_eq!(shape, PredictShape::List);
        assert_eq!(v, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        assert_eq!(predict("[]").unwrap(), (PredictShape::List, vec![]));
    }

    #[test]
    fn predict_errors_have_the_right_status_and_say_why() {
        let cases: &[(&str, u16, &str)] = &[
            ("{", 400, "malformed JSON"),
            ("", 400, "malformed JSON"),
            (r#"{"ph": 1} x"#, 400, "malformed JSON"),
            (r#"{"ph": NaN}"#, 400, "malformed JSON"),
            (
                r#"{"ph": 1, "fixed_acidity": 2}"#,
                422,
                "missing feature(s) alcohol in row 0",
            ),
            (
                r#"{"ph": 1, "fixed_acidity": 2, "alcohol": 3, "x": 1}"#,
                422,
                "unknown feature 'x'",
            ),
            (r#"{"ph": 1, "ph": 2}"#, 422, "feature 'ph' given twice"),
            (
                r#"{"ph": "1", "fixed_acidity": 2, "alcohol": 3}"#,
                422,
                "finite number for feature 'ph'",
            ),
            (
                r#"{"ph": null, "fixed_acidity": 2, "alcohol": 3}"#,
                422,
                "finite number for feature 'ph'",
            ),
            (
                r#"{"ph": 1e400, "fixed_acidity": 2, "alcohol": 3}"#,
                422,
                "non-finite",
            ),
            ("5", 422, "object of feature name"),
            ("[5]", 422, "row 0 as an object"),
            (
                r#"[{"ph": 1, "fixed_acidity": 2, "alcohol": 3}, {}]"#,
                422,
                "in row 1",
            ),
        ];
        for (body, status, needle) in cases {
            let e = predict(body).unwrap_err();
            assert_eq!(e.status.as_u16(), *status, "{body}: {e:?}");
            assert!(e.message.contains(needle), "{body}: {e:?}");
        }
    }

    #[test]
    fn v1_accepts_arrays_and_objects() {
        let m = sum_model();
        let mut s = Scratch::default();
        parse_v1(
            br#"{"signature_name": "x", "instances": [[1, 2, 3], {"alcohol": 4, "ph": 6, "fixed_acidity": 5}]}"#,
            &m,
            &mut s,
        )
        .unwrap();
        assert_eq!(s.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(rows(&s, &m), 2);
    }

    #[test]
    fn v1_errors() {
        let m = sum_model();
        let cases: &[(&str, u16, &str)] = &[
            (
                r#"{"instances": [[1, 2]]}"#,
                422,
                "row 0 has 2 values; expected 3",
            ),
            (
                r#"{"instances": [[1, 2, 3, 4]]}"#,
                422,
                "more than 3 values",
            ),
            (r#"{"instances": [[1, 2, "a"]]}"#, 422, "finite number"),
            (r#"{"instances": [1]}"#, 422, "instance 0 as an array"),
            (r#"{"instances": 1}"#, 422, "list of rows"),
            (r#"{"inputs": []}"#, 422, "missing \"instances\""),
            (r#"[]"#, 422, "\"instances\""),
            (r#"{"instances": [[1,2,3]]"#, 400, "malformed"),
        ];
        for (body, status, needle) in cases {
            let e = parse_v1(body.as_bytes(), &m, &mut Scratch::default()).unwrap_err();
            assert_eq!(e.status.as_u16(), *status, "{body}: {e:?}");
            assert!(e.message.contains(needle), "{body}: {e:?}");
        }
    }

    #[test]
    fn v2_flat_and_nested_data() {
        let m = sum_model();
        let mut s = Scratch::default();
        let r = parse_v2(
            br#"{"id": "42", "inputs": [{"name": "input-0", "data": [1, 2, 3, 4, 5, 6], "shape": [2, 3], "datatype": "FP64"}]}"#,
            &m,
            &mut s,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(
            r.outputs,
            V2Outputs {
                label: true,
                probabilities: true
            }
        );
        assert_eq!(s.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let r = parse_v2(
            br#"{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}], "outputs": [{"name": "label"}]}"#,
            &m,
            &mut s,
        )
        .unwrap();
        assert_eq!(
            r.outputs,
            V2Outputs {
                label: true,
                probabilities: false
            }
        );
        assert_eq!(s.values.len(), 6);
    }

    #[test]
    fn v2_errors() {
        let m = sum_model();
        let t = |shape: &str, dt: &str, data: &str| {
            format!(
                r#"{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "{dt}", "data": {data}}}]}}"#
            )
        };
        let cases: Vec<(String, u16, &str)> = vec![
            (t("[1, 3]", "INT64", "[1,2,3]"), 422, "unsupported datatype 'INT64'"),
            (t("[1, 2]", "FP64", "[1,2]"), 422, "expected shape [N, 3]"),
            (t("[3]", "FP64", "[1,2,3]"), 422, "expected shape [N, 3]"),
            (t("[2, 3]", "FP64", "[1,2,3]"), 422, "needs 6 values but \"data\" has 3"),
            (t("[1, 3]", "FP64", "[1,2,\"a\"]"), 422, "element 2 is not a number"),
            (t("[1, 3]", "FP64", "[1,2,null]"), 422, "element 2 is not a number"),
            (t("[1, 3]", "FP64", "3"), 422, "not an array"),
            (t("[1, 3]", "FP64", "[[1,2],[{}]]"), 422, "element 2 is not a number"),
            (t("[-1, 3]", "FP64", "[1,2,3]"), 422, "invalid value"),
            (t("[1, 3]", "FP64", "[1,2,1e999]"), 422, "non-finite"),
            (r#"{"inputs": []}"#.into(), 422, "\"inputs\" is empty"),
            (r#"{"id": "x"}"#.into(), 422, "missing \"inputs\""),
            (r#"{"inputs": [{"shape": [1,3], "datatype": "FP64"}]}"#.into(), 422, "no \"data\""),
            (
                r#"{"inputs": [{"shape": [1,3], "datatype": "FP64", "data": [1,2,3]}], "outputs": [{"name": "z"}]}"#.into(),
                422,
                "unknown output 'z'",
            ),
            ("{\"inputs\": [".into(), 400, "malformed"),
        ];
        for (body, status, needle) in cases {
            let e = parse_v2(body.as_bytes(), &m, &mut Scratch::default()).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            assert!(e.message.contains(needle), "{body}: {e:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn tensor_numbers_read_exactly_as_serde_json_reads_them(
            xs in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO, 0..40),
            exp in proptest::bool::ANY,
            ints in proptest::collection::vec(proptest::num::i64::ANY, 0..5),
        ) {
            let mut parts: Vec<String> = xs.iter().map(|x| if exp { format!("{x:e}") } else { format!("{x}") }).collect();
            parts.extend(ints.iter().map(|i| i.to_string()));
            let text = format!("[{}]", parts.join(", "));
            let want: Vec<f64> = serde_json::from_str(&text).unwrap();
            let mut got = Vec::new();
            read_flat_numbers(&text, &mut got).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
