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
    /// The binary tensor data after the JSON inference header (v2 binary extension), and
    /// whether the request was framed that way at all (`Inference-Header-Content-Length`).
    binary: &'a [u8],
    framed: bool,
    binary_used: usize,
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
            binary: &[],
            framed: false,
            binary_used: 0,
        }
    }

    /// Records the precise reason and returns an opaque serde error that unwinds the parse.
    fn fail<E: de::Error>(&mut self, message: String) -> E {
        self.fail_with(InputError::unprocessable(message))
    }

    fn fail_with<E: de::Error>(&mut self, error: InputError) -> E {
        self.error = Some(error);
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

/// Which outputs a v2 client asked for (all when it names none), and which of them it wants
/// as binary tensor data (`binary_data_output` for all, or `parameters.binary_data` per output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V2Outputs {
    pub label: bool,
    pub probabilities: bool,
    pub label_binary: bool,
    pub probabilities_binary: bool,
}

impl V2Outputs {
    /// Both outputs, as JSON.
    pub const ALL_JSON: V2Outputs = V2Outputs {
        label: true,
        probabilities: true,
        label_binary: false,
        probabilities_binary: false,
    };
}

/// The tensor datatypes an input may use (Open Inference Protocol names). Every value is
/// converted to f64 for scoring; 64-bit integers beyond 2^53 are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

pub const SUPPORTED_DATATYPES: &str =
    "FP64, FP32, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 or BOOL";

impl DataType {
    pub fn from_name(name: &str) -> Option<DataType> {
        Some(match name {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::U8,
            "UINT16" => DataType::U16,
            "UINT32" => DataType::U32,
            "UINT64" => DataType::U64,
            "INT8" => DataType::I8,
            "INT16" => DataType::I16,
            "INT32" => DataType::I32,
            "INT64" => DataType::I64,
            "FP32" => DataType::F32,
            "FP64" => DataType::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
        }
    }

    /// Bytes per element in the binary tensor encoding.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
        }
    }

    /// The range of an integer type (`None` for floats and BOOL).
    fn int_range(self) -> Option<(f64, f64)> {
        Some(match self {
            DataType::U8 => (0.0, u8::MAX as f64),
            DataType::U16 => (0.0, u16::MAX as f64),
            DataType::U32 => (0.0, u32::MAX as f64),
            DataType::U64 => (0.0, u64::MAX as f64),
            DataType::I8 => (i8::MIN as f64, i8::MAX as f64),
            DataType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DataType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DataType::I64 => (i64::MIN as f64, i64::MAX as f64),
            _ => return None,
        })
    }
}

/// Appends the little-endian, row-major binary tensor `bytes` of type `dt` to `out` as f64.
/// `bytes.len()` must be a multiple of `dt.size()` (the caller checked it against the shape).
pub fn decode_binary(dt: DataType, bytes: &[u8], out: &mut Vec<f64>) -> Result<(), String> {
    let start = out.len();
    out.reserve(bytes.len() / dt.size());
    macro_rules! ints {
        ($t:ty) => {{
            for c in bytes.chunks_exact(std::mem::size_of::<$t>()) {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(c);
                out.push(<$t>::from_le_bytes(a) as f64);
            }
        }};
    }
    match dt {
        DataType::Bool => {
            for (i, b) in bytes.iter().enumerate() {
                match b {
                    0 => out.push(0.0),
                    1 => out.push(1.0),
                    other => {
                        return Err(format!(
                            "BOOL tensor element {i} is the byte {other}; expected 0 (false) or 1 (true)"
                        ));
                    }
                }
            }
        }
        DataType::U8 => ints!(u8),
        DataType::U16 => ints!(u16),
        DataType::U32 => ints!(u32),
        DataType::U64 => ints!(u64),
        DataType::I8 => ints!(i8),
        DataType::I16 => ints!(i16),
        DataType::I32 => ints!(i32),
        DataType::I64 => ints!(i64),
        DataType::F32 => ints!(f32),
        DataType::F64 => ints!(f64),
    }
    if matches!(dt, DataType::F32 | DataType::F64)
        && let Some(i) = out[start..].iter().position(|v| !v.is_finite())
    {
        return Err(format!(
            "non-finite number {} at tensor element {i}",
            out[start + i]
        ));
    }
    Ok(())
}

pub const V2_LABEL_OUTPUT: &str = "label";
pub const V2_PROBA_OUTPUT: &str = "probabilities";
pub const V2_INPUT: &str = "input-0";

#[derive(Debug, Clone, PartialEq)]
pub struct V2Request {
    pub id: Option<String>,
    pub outputs: V2Outputs,
}

/// Open Inference Protocol v2: one input tensor of shape [N, features], as JSON `data` or,
/// with the binary tensor data extension, as raw little-endian bytes after a JSON inference
/// header of `header_len` bytes (the `Inference-Header-Content-Length` request header).
pub fn parse_v2(
    body: &[u8],
    header_len: Option<usize>,
    model: &ServedModel,
    scratch: &mut Scratch,
) -> Result<V2Request, InputError> {
    let (json, binary) = match header_len {
        None => (body, &[][..]),
        Some(len) if len > body.len() => {
            return Err(InputError::bad_request(format!(
                "Inference-Header-Content-Length is {len} but the body has only {} bytes;                  expected the JSON inference header followed by the binary tensor data",
                body.len()
            )));
        }
        Some(len) => body.split_at(len),
    };
    let mut ctx = Ctx::new(model, scratch);
    ctx.binary = binary;
    ctx.framed = header_len.is_some();
    let mut req = V2Request {
        id: None,
        outputs: V2Outputs::ALL_JSON,
    };
    run(json, &mut ctx, |de, ctx| {
        req = de::Deserializer::deserialize_map(de, V2Top(ctx))?;
        Ok(())
    })?;
    if ctx.binary_used != binary.len() {
        return Err(InputError::bad_request(format!(
            "{} bytes follow the JSON inference header but the inputs declare {} bytes of              binary data (parameters.binary_data_size); the sizes must add up to the rest of the body",
            binary.len(),
            ctx.binary_used
        )));
    }
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
                    "parameters" => "parameters",
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
    #[serde(default)]
    parameters: OutputParameters,
}

/// `$request_output.parameters`; other parameters are ignored.
#[derive(serde::Deserialize, Default)]
struct OutputParameters {
    binary_data: Option<bool>,
}

/// `$inference_request.parameters`; other parameters are ignored.
#[derive(serde::Deserialize, Default)]
struct RequestParameters {
    binary_data_output: Option<bool>,
}

/// `$request_input.parameters`; other parameters are ignored.
#[derive(serde::Deserialize, Default)]
struct InputParameters {
    binary_data_size: Option<u64>,
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
        let mut params = RequestParameters::default();
        while let Some(key) = map.next_key::<KeyName>()? {
            match &*key.0 {
                "id" => id = Some(map.next_value::<String>()?),
                "parameters" => params = map.next_value()?,
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
                "missing \"inputs\": expected one tensor of shape [N, {}] ({SUPPORTED_DATATYPES})",
                ctx.model.n_features()
            )));
        }
        let binary_default = params.binary_data_output.unwrap_or(false);
        let outputs = match outputs {
            Some(list) if !list.is_empty() => {
                let mut sel = V2Outputs::default();
                for o in list {
                    let binary = o.parameters.binary_data.unwrap_or(binary_default);
                    match o.name.as_str() {
                        V2_LABEL_OUTPUT => {
                            sel.label = true;
                            sel.label_binary = binary;
                        }
                        V2_PROBA_OUTPUT => {
                            sel.probabilities = true;
                            sel.probabilities_binary = binary;
                        }
                        other => {
                            return Err(ctx.fail(format!(
                                "unknown output '{other}'; this model has outputs '{V2_LABEL_OUTPUT}' and '{V2_PROBA_OUTPUT}'"
                            )));
                        }
                    }
                }
                sel
            }
            _ => V2Outputs {
                label_binary: binary_default,
                probabilities_binary: binary_default,
                ..V2Outputs::ALL_JSON
            },
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
                "\"inputs\" is empty; expected one tensor of shape [N, {}]",
                ctx.model.n_features()
            );
            return Err(ctx.fail(msg));
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            let msg = format!(
                "\"inputs\" has more than one tensor; expected one tensor of shape [N, {}]",
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
        let start = ctx.values.len();
        let mut shape: Option<Vec<u64>> = None;
        let mut datatype: Option<String> = None;
        let mut data = false;
        let mut saw_bool = None;
        let mut params = InputParameters::default();
        while let Some(key) = map.next_key::<KeyName>()? {
            match &*key.0 {
                "shape" => shape = Some(map.next_value()?),
                "datatype" => datatype = Some(map.next_value()?),
                "parameters" => params = map.next_value()?,
                "data" => {
                    if data {
                        return Err(ctx.fail("tensor \"data\" given twice".into()));
                    }
                    // serde_json checks the JSON grammar while skipping the raw value; the
                    // numbers are then read by `read_flat_numbers`, several times faster than
                    // serde_json's exact-roundtrip float parser on a 1,000-row tensor.
                    let raw: &serde_json::value::RawValue = map.next_value()?;
                    match read_flat_values(raw.get(), ctx.values) {
                        Ok(kinds) => saw_bool = Some(kinds),
                        Err(msg) => return Err(ctx.fail(msg)),
                    }
                    data = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let expected = || format!("expected shape [N, {n}] (one column per feature)");
        let dt = match datatype.as_deref() {
            Some(name) => match DataType::from_name(name) {
                Some(dt) => dt,
                None => {
                    return Err(ctx.fail(format!(
                        "unsupported datatype '{name}'; expected {SUPPORTED_DATATYPES}"
                    )));
                }
            },
            None => {
                return Err(ctx.fail(format!(
                    "tensor has no \"datatype\"; expected {SUPPORTED_DATATYPES}"
                )));
            }
        };
        let Some(shape) = shape else {
            return Err(ctx.fail(format!("tensor has no \"shape\"; {}", expected())));
        };
        if shape.len() != 2 || shape[1] != n as u64 {
            return Err(ctx.fail(format!("tensor shape {shape:?}; {}", expected())));
        }
        let elements = shape[0].checked_mul(n as u64);
        match (data, params.binary_data_size) {
            (true, Some(_)) => {
                return Err(ctx.fail(
                    "tensor has both \"data\" and parameters.binary_data_size; send the values one way"
                        .into(),
                ));
            }
            (false, None) => {
                return Err(ctx.fail(
                    "tensor has no \"data\" (nor parameters.binary_data_size for binary tensor data)"
                        .into(),
                ));
            }
            (true, None) => {
                let got = (ctx.values.len() - start) as u64;
                if elements != Some(got) {
                    return Err(ctx.fail(format!(
                        "tensor shape {shape:?} needs {} values but \"data\" has {got}",
                        shape[0].saturating_mul(n as u64)
                    )));
                }
                if let Err(msg) = check_json_values(dt, &ctx.values[start..], saw_bool) {
                    return Err(ctx.fail(msg));
                }
            }
            (false, Some(size)) => {
                let needed = elements.and_then(|e| e.checked_mul(dt.size() as u64));
                if needed != Some(size) {
                    return Err(ctx.fail(format!(
                        "tensor shape {shape:?} of {} needs {} bytes of binary data but parameters.binary_data_size is {size}",
                        dt.name(),
                        shape[0]
                            .saturating_mul(n as u64)
                            .saturating_mul(dt.size() as u64)
                    )));
                }
                if !ctx.framed {
                    return Err(ctx.fail_with(InputError::bad_request(
                        "parameters.binary_data_size is set but the request has no \
                         Inference-Header-Content-Length header; expected that header with the \
                         length of the JSON inference header, the binary tensor data after it",
                    )));
                }
                let available = ctx.binary.len() - ctx.binary_used;
                let Some(bytes) = usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= available)
                    .map(|s| &ctx.binary[ctx.binary_used..ctx.binary_used + s])
                else {
                    return Err(ctx.fail_with(InputError::bad_request(format!(
                        "parameters.binary_data_size is {size} but only {available} bytes of \
                         binary data follow the JSON inference header"
                    ))));
                };
                ctx.binary_used += bytes.len();
                if let Err(msg) = decode_binary(dt, bytes, ctx.values) {
                    return Err(ctx.fail(msg));
                }
            }
        }
        ctx.rows = ctx.values.len() / n;
        Ok(())
    }
}

/// What a JSON tensor's `data` held besides numbers: the index of the first `true`/`false` and
/// of the first number, so the datatype can be checked once it is known (keys come in any order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueKinds {
    pub first_bool: Option<usize>,
    pub first_number: Option<usize>,
}

/// The JSON values must fit the declared datatype: BOOL takes true/false, integer types take
/// whole numbers in range, floats any finite number.
fn check_json_values(
    dt: DataType,
    values: &[f64],
    kinds: Option<ValueKinds>,
) -> Result<(), String> {
    let kinds = kinds.unwrap_or_default();
    if dt == DataType::Bool {
        if let Some(i) = kinds.first_number {
            return Err(format!(
                "BOOL tensor element {i} is a number; expected true or false"
            ));
        }
        return Ok(());
    }
    if let Some(i) = kinds.first_bool {
        return Err(format!(
            "tensor data element {i} is not a number; expected (nested) arrays of finite numbers for {}",
            dt.name()
        ));
    }
    if let Some((lo, hi)) = dt.int_range()
        && let Some(i) = values
            .iter()
            .position(|v| v.fract() != 0.0 || *v < lo || *v > hi)
    {
        return Err(format!(
            "{} tensor element {i} is {}; expected a whole number from {lo} to {hi}",
            dt.name(),
            values[i]
        ));
    }
    Ok(())
}

/// `read_flat_numbers` that also takes `true`/`false` (as 1/0) for BOOL tensors.
fn read_flat_values(text: &str, values: &mut Vec<f64>) -> Result<ValueKinds, String> {
    let mut kinds = ValueKinds::default();
    let start = values.len();
    read_flat(text, values, &mut kinds)?;
    if kinds.first_number.is_some() || kinds.first_bool.is_some() {
        kinds.first_number = kinds.first_number.map(|i| i - start);
        kinds.first_bool = kinds.first_bool.map(|i| i - start);
    }
    Ok(kinds)
}

/// Tensor data, already known to be valid JSON: flat row-major or nested arrays of numbers,
/// flattened into `values`. Every number is correctly rounded (the same f64 serde_json
/// produces): short decimals take the exact fast path, anything else the standard library's
/// parser.
pub fn read_flat_numbers(text: &str, values: &mut Vec<f64>) -> Result<(), String> {
    let mut kinds = ValueKinds::default();
    read_flat(text, values, &mut kinds)?;
    match kinds.first_bool {
        Some(i) => Err(format!(
            "tensor data element {i} is not a number; expected (nested) arrays of finite numbers"
        )),
        None => Ok(()),
    }
}

fn read_flat(text: &str, values: &mut Vec<f64>, kinds: &mut ValueKinds) -> Result<(), String> {
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
                if kinds.first_number.is_none() {
                    kinds.first_number = Some(values.len());
                }
                values.push(v);
                i = end;
            }
            b't' if b[i..].starts_with(b"true") => {
                kinds.first_bool.get_or_insert(values.len());
                values.push(1.0);
                i += 4;
            }
            b'f' if b[i..].starts_with(b"false") => {
                kinds.first_bool.get_or_insert(values.len());
                values.push(0.0);
                i += 5;
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
            None,
            &m,
            &mut s,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(r.outputs, V2Outputs::ALL_JSON);
        assert_eq!(s.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let r = parse_v2(
            br#"{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}], "outputs": [{"name": "label"}]}"#,
            None,
            &m,
            &mut s,
        )
        .unwrap();
        assert_eq!(
            r.outputs,
            V2Outputs {
                label: true,
                ..V2Outputs::default()
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
            (t("[1, 3]", "FP16", "[1,2,3]"), 422, "unsupported datatype 'FP16'"),
            (t("[1, 3]", "INT8", "[1,2,300]"), 422, "INT8 tensor element 2 is 300"),
            (t("[1, 3]", "UINT8", "[1,-2,3]"), 422, "UINT8 tensor element 1 is -2"),
            (t("[1, 3]", "INT32", "[1,2.5,3]"), 422, "whole number"),
            (t("[1, 3]", "BOOL", "[true,2,false]"), 422, "BOOL tensor element 1 is a number"),
            (t("[1, 3]", "FP64", "[true,2,3]"), 422, "element 0 is not a number"),
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
            let e = parse_v2(body.as_bytes(), None, &m, &mut Scratch::default()).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            assert!(e.message.contains(needle), "{body}: {e:?}");
        }
    }

    #[test]
    fn v2_json_integer_and_bool_tensors() {
        let m = sum_model();
        let mut s = Scratch::default();
        for (dt, data, want) in [
            ("INT64", "[1,-2,3]", vec![1.0, -2.0, 3.0]),
            ("UINT8", "[[0,255,7]]", vec![0.0, 255.0, 7.0]),
            ("BOOL", "[true,false,true]", vec![1.0, 0.0, 1.0]),
        ] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1,3],"datatype":"{dt}","data":{data}}}]}}"#
            );
            parse_v2(body.as_bytes(), None, &m, &mut s).unwrap_or_else(|e| panic!("{dt}: {e:?}"));
            assert_eq!(s.values, want, "{dt}");
        }
    }

    /// A v2 request in the binary tensor extension's framing, as tritonclient builds it.
    fn framed(header: &str, binary: &[u8]) -> (Vec<u8>, usize) {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(binary);
        (body, header.len())
    }

    fn binary_header(dt: &str, rows: usize, size: usize, extra: &str) -> String {
        format!(
            r#"{{"inputs":[{{"name":"input-0","shape":[{rows},3],"datatype":"{dt}","parameters":{{"binary_data_size":{size}}}}}]{extra}}}"#
        )
    }

    #[test]
    fn v2_binary_inputs_of_every_datatype() {
        let m = sum_model();
        let mut s = Scratch::default();
        let want = [1.0f64, 0.0, 1.0, 0.0, 1.0, 1.0];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("FP64", want.iter().flat_map(|v| v.to_le_bytes()).collect()),
            (
                "FP32",
                want.iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect(),
            ),
            ("INT8", want.iter().map(|v| *v as i8 as u8).collect()),
            (
                "INT16",
                want.iter()
                    .flat_map(|v| (*v as i16).to_le_bytes())
                    .collect(),
            ),
            (
                "INT32",
                want.iter()
                    .flat_map(|v| (*v as i32).to_le_bytes())
                    .collect(),
            ),
            (
                "INT64",
                want.iter()
                    .flat_map(|v| (*v as i64).to_le_bytes())
                    .collect(),
            ),
            ("UINT8", want.iter().map(|v| *v as u8).collect()),
            (
                "UINT16",
                want.iter()
                    .flat_map(|v| (*v as u16).to_le_bytes())
                    .collect(),
            ),
            (
                "UINT32",
                want.iter()
                    .flat_map(|v| (*v as u32).to_le_bytes())
                    .collect(),
            ),
            (
                "UINT64",
                want.iter()
                    .flat_map(|v| (*v as u64).to_le_bytes())
                    .collect(),
            ),
            ("BOOL", want.iter().map(|v| *v as u8).collect()),
        ];
        for (dt, bytes) in cases {
            let (body, len) = framed(&binary_header(dt, 2, bytes.len(), ""), &bytes);
            parse_v2(&body, Some(len), &m, &mut s).unwrap_or_else(|e| panic!("{dt}: {e:?}"));
            assert_eq!(s.values, want, "{dt}");
        }
        let negative: Vec<u8> = [-3i16, 7, -32768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (body, len) = framed(&binary_header("INT16", 1, 6, ""), &negative);
        parse_v2(&body, Some(len), &m, &mut s).unwrap();
        assert_eq!(s.values, vec![-3.0, 7.0, -32768.0]);
    }

    #[test]
    fn v2_binary_output_selection() {
        let m = sum_model();
        let bytes = [0u8; 24];
        let out = |extra: &str| {
            let (body, len) = framed(&binary_header("FP64", 1, 24, extra), &bytes);
            parse_v2(&body, Some(len), &m, &mut Scratch::default())
                .unwrap_or_else(|e| panic!("{extra}: {e:?}"))
                .outputs
        };
        assert_eq!(out(""), V2Outputs::ALL_JSON);
        assert_eq!(
            out(r#","parameters":{"binary_data_output":true}"#),
            V2Outputs {
                label: true,
                probabilities: true,
                label_binary: true,
                probabilities_binary: true
            }
        );
        assert_eq!(
            out(
                r#","outputs":[{"name":"probabilities","parameters":{"binary_data":true}},{"name":"label"}]"#
            ),
            V2Outputs {
                label: true,
                probabilities: true,
                label_binary: false,
                probabilities_binary: true
            }
        );
        assert_eq!(
            out(
                r#","parameters":{"binary_data_output":true},"outputs":[{"name":"label","parameters":{"binary_data":false}}]"#
            ),
            V2Outputs {
                label: true,
                ..V2Outputs::default()
            }
        );
    }

    #[test]
    fn v2_binary_framing_errors_are_4xx_and_say_why() {
        let m = sum_model();
        let fp64 = |n: usize| vec![0u8; n];
        let h = binary_header("FP64", 1, 24, "");
        let json_only =
            r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP64","data":[1,2,3]}]}"#;
        let both = r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP64","data":[1,2,3],"parameters":{"binary_data_size":24}}]}"#;
        let cases: Vec<(Vec<u8>, Option<usize>, u16, &str)> = vec![
            // header length beyond the body
            (
                h.as_bytes().to_vec(),
                Some(h.len() + 1),
                400,
                "body has only",
            ),
            // fewer bytes than declared
            (
                framed(&h, &fp64(16)).0,
                Some(h.len()),
                400,
                "binary_data_size is 24 but only 16 bytes",
            ),
            // more bytes than declared
            (
                framed(&h, &fp64(32)).0,
                Some(h.len()),
                400,
                "32 bytes follow the JSON inference header",
            ),
            // no framing header at all
            (
                h.as_bytes().to_vec(),
                None,
                400,
                "no Inference-Header-Content-Length",
            ),
            // header length cuts the JSON
            (
                framed(&h, &fp64(24)).0,
                Some(h.len() - 2),
                400,
                "malformed JSON",
            ),
            // binary bytes but no input declares them
            (
                framed(json_only, &fp64(8)).0,
                Some(json_only.len()),
                400,
                "8 bytes follow",
            ),
            // size does not match the shape
            (
                framed(&binary_header("FP64", 2, 24, ""), &fp64(24)).0,
                Some(binary_header("FP64", 2, 24, "").len()),
                422,
                "needs 48 bytes of binary data but parameters.binary_data_size is 24",
            ),
            (
                framed(&binary_header("FP32", 1, 24, ""), &fp64(24)).0,
                Some(binary_header("FP32", 1, 24, "").len()),
                422,
                "needs 12 bytes",
            ),
            // huge shape does not overflow
            (
                framed(&binary_header("FP64", usize::MAX / 2, 24, ""), &fp64(24)).0,
                Some(binary_header("FP64", usize::MAX / 2, 24, "").len()),
                422,
                "parameters.binary_data_size is 24",
            ),
            // bad element values
            (
                framed(&binary_header("BOOL", 1, 3, ""), &[0, 2, 1]).0,
                Some(binary_header("BOOL", 1, 3, "").len()),
                422,
                "BOOL tensor element 1 is the byte 2",
            ),
            (
                framed(
                    &binary_header("FP64", 1, 24, ""),
                    &[f64::NAN.to_le_bytes(), [0; 8], [0; 8]].concat(),
                )
                .0,
                Some(binary_header("FP64", 1, 24, "").len()),
                422,
                "non-finite number NaN at tensor element 0",
            ),
            // both data and binary size
            (
                framed(both, &fp64(24)).0,
                Some(both.len()),
                422,
                "both \"data\" and parameters.binary_data_size",
            ),
            (
                framed(
                    &binary_header(
                        "FP64",
                        1,
                        24,
                        r#","parameters":{"binary_data_output":"yes"}"#,
                    ),
                    &fp64(24),
                )
                .0,
                Some(
                    binary_header(
                        "FP64",
                        1,
                        24,
                        r#","parameters":{"binary_data_output":"yes"}"#,
                    )
                    .len(),
                ),
                422,
                "expected a boolean",
            ),
        ];
        for (body, len, status, needle) in cases {
            let e = parse_v2(&body, len, &m, &mut Scratch::default())
                .expect_err(&String::from_utf8_lossy(&body));
            assert_eq!(e.status.as_u16(), status, "{needle}: {e:?}");
            assert!(e.message.contains(needle), "{needle}: {e:?}");
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
