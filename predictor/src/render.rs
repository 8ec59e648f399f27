//! Response bodies written by hand into one buffer: labels, keys and the model version are
//! escaped once at load time, numbers go through ryu (serde_json's float formatter).

use serde_json::ser::{CompactFormatter, Formatter};

use crate::model::ServedModel;
use crate::parse::{PredictShape, V2_LABEL_OUTPUT, V2_PROBA_OUTPUT, V2Outputs};

fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        // Writing into a Vec cannot fail.
        let _ = CompactFormatter.write_f64(out, v);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    let _ = CompactFormatter.write_u64(out, v);
}

/// Scores every row of `values` into `proba` (row-major, one slot per class) and returns the
/// class index of each row through `classes`; counts predictions per class into `per_class`.
pub fn infer(
    model: &ServedModel,
    values: &[f64],
    proba: &mut Vec<f64>,
    classes: &mut Vec<u32>,
    per_class: &mut [u64],
) -> Result<(), String> {
    let n = model.n_features();
    let c = model.n_classes();
    let rows = values.len() / n;
    proba.clear();
    proba.resize(rows * c, 0.0);
    classes.clear();
    for (row, out) in values.chunks_exact(n).zip(proba.chunks_exact_mut(c)) {
        let k = model.classify(row, out)?;
        per_class[k] += 1;
        classes.push(k as u32);
    }
    Ok(())
}

fn push_prediction_object(out: &mut Vec<u8>, model: &ServedModel, class: u32, proba: &[f64]) {
    out.extend_from_slice(b"{\"label\":");
    out.extend_from_slice(model.label_json[class as usize].as_bytes());
    out.extend_from_slice(b",\"probabilities\":{");
    for (i, p) in proba.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(model.proba_key_json[i].as_bytes());
        push_f64(out, *p);
    }
    out.extend_from_slice(b"},\"modelVersion\":");
    out.extend_from_slice(model.version_json.as_bytes());
    out.push(b'}');
}

/// `/predict`: an object for one row, a list of objects for a list.
pub fn predict(
    model: &ServedModel,
    shape: PredictShape,
    classes: &[u32],
    proba: &[f64],
) -> Vec<u8> {
    let c = model.n_classes();
    let per_row = 64 + model.version_json.len() + c * 32;
    let mut out = Vec::with_capacity(per_row * classes.len().max(1) + 2);
    match shape {
        PredictShape::Single => {
            if let (Some(k), Some(p)) = (classes.first(), proba.get(..c)) {
                push_prediction_object(&mut out, model, *k, p);
            }
        }
        PredictShape::List => {
            out.push(b'[');
            for (i, (k, p)) in classes.iter().zip(proba.chunks_exact(c)).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_prediction_object(&mut out, model, *k, p);
            }
            out.push(b']');
        }
    }
    out
}

/// KServe v1: `{"predictions": [label, …], "modelVersion": …}`.
pub fn v1_predict(model: &ServedModel, classes: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + model.version_json.len() + classes.len() * 12);
    out.extend_from_slice(b"{\"predictions\":[");
    for (i, k) in classes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(model.label_json[*k as usize].as_bytes());
    }
    out.extend_from_slice(b"],\"modelVersion\":");
    out.extend_from_slice(model.version_json.as_bytes());
    out.push(b'}');
    out
}

/// Open Inference Protocol v2 inference response. Returns the body and, when an output is
/// sent as binary tensor data, the length of the JSON inference header at its start (for the
/// `Inference-Header-Content-Length` response header); the binary data follows the JSON in
/// the order of the outputs, labels as BYTES (4-byte little-endian length, then the UTF-8
/// bytes) and probabilities as little-endian FP64.
pub fn v2_infer(
    model: &ServedModel,
    id: Option<&str>,
    outputs: V2Outputs,
    classes: &[u32],
    proba: &[f64],
) -> (Vec<u8>, Option<usize>) {
    let rows = classes.len() as u64;
    let c = model.n_classes();
    let mut out = Vec::with_capacity(256 + classes.len() * (12 + c * 22));
    let mut binary = Vec::new();
    out.extend_from_slice(b"{\"model_name\":");
    out.extend_from_slice(model.name_json.as_bytes());
    out.extend_from_slice(b",\"model_version\":");
    out.extend_from_slice(model.version_json.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        // A String always serialises.
        let _ = serde_json::to_writer(&mut out, id);
    }
    out.extend_from_slice(b",\"outputs\":[");
    let mut first = true;
    if outputs.label {
        first = false;
        out.extend_from_slice(b"{\"name\":\"");
        out.extend_from_slice(V2_LABEL_OUTPUT.as_bytes());
        out.extend_from_slice(b"\",\"datatype\":\"BYTES\",\"shape\":[");
        push_u64(&mut out, rows);
        if outputs.label_binary {
            let start = binary.len();
            for k in classes {
                let label = model.meta.class_labels[*k as usize].as_bytes();
                binary.extend_from_slice(&(label.len() as u32).to_le_bytes());
                binary.extend_from_slice(label);
            }
            out.extend_from_slice(b"],\"parameters\":{\"binary_data_size\":");
            push_u64(&mut out, (binary.len() - start) as u64);
            out.extend_from_slice(b"}}");
        } else {
            out.extend_from_slice(b"],\"data\":[");
            for (i, k) in classes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(model.label_json[*k as usize].as_bytes());
            }
            out.extend_from_slice(b"]}");
        }
    }
    if outputs.probabilities {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":\"");
        out.extend_from_slice(V2_PROBA_OUTPUT.as_bytes());
        out.extend_from_slice(b"\",\"datatype\":\"FP64\",\"shape\":[");
        push_u64(&mut out, rows);
        out.push(b',');
        push_u64(&mut out, c as u64);
        if outputs.probabilities_binary {
            let start = binary.len();
            binary.reserve(proba.len() * 8);
            for p in proba {
                binary.extend_from_slice(&p.to_le_bytes());
            }
            out.extend_from_slice(b"],\"parameters\":{\"binary_data_size\":");
            push_u64(&mut out, (binary.len() - start) as u64);
            out.extend_from_slice(b"}}");
        } else {
            out.extend_from_slice(b"],\"data\":[");
            for (i, p) in proba.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_f64(&mut out, *p);
            }
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    if outputs.label_binary && outputs.label
        || outputs.probabilities_binary && outputs.probabilities
    {
        let header_len = out.len();
        out.extend_from_slice(&binary);
        (out, Some(header_len))
    } else {
        (out, None)
    }
}

/// Error bodies. The v2 protocol fixes `{"error": "…"}`; the other dialects add the model
/// version and, for input errors, the expected features as a list a client can use.
pub fn error(model: Option<&ServedModel>, message: &str, v2: bool, with_features: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"error\":");
    let _ = serde_json::to_writer(&mut out, message);
    if let (false, Some(m)) = (v2, model) {
        if with_features {
            out.extend_from_slice(b",\"expectedFeatures\":");
            out.extend_from_slice(m.expected_features_json.as_bytes());
        }
        out.extend_from_slice(b",\"modelVersion\":");
        out.extend_from_slice(m.version_json.as_bytes());
    }
    out.push(b'}');
    out
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own metadata types always serialise.
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

#[derive(serde::Serialize)]
struct TensorMeta<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: [i64; 2],
}

#[derive(serde::Serialize)]
struct LabelMeta<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: [i64; 1],
}

/// `GET /v2/models/{name}`: model metadata per the Open Inference Protocol.
pub fn v2_model_metadata(model: &ServedModel) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Meta<'a> {
        name: &'a str,
        versions: [&'a str; 1],
        platform: &'a str,
        inputs: [TensorMeta<'a>; 1],
        outputs: (LabelMeta<'a>, TensorMeta<'a>),
        parameters: Params<'a>,
    }
    #[derive(serde::Serialize)]
    struct Params<'a> {
        feature_names: &'a [String],
        class_labels: &'a [String],
        algorithm: &'a str,
        sha256: &'a str,
    }
    json(&Meta {
        name: &model.meta.name,
        versions: [&model.meta.version],
        platform: "champion",
        inputs: [TensorMeta {
            name: crate::parse::V2_INPUT,
            datatype: "FP64",
            shape: [-1, model.n_features() as i64],
        }],
        outputs: (
            LabelMeta {
                name: V2_LABEL_OUTPUT,
                datatype: "BYTES",
                shape: [-1],
            },
            TensorMeta {
                name: V2_PROBA_OUTPUT,
                datatype: "FP64",
                shape: [-1, model.n_classes() as i64],
            },
        ),
        parameters: Params {
            feature_names: &model.meta.feature_names,
            class_labels: &model.meta.class_labels,
            algorithm: &model.meta.algorithm,
            sha256: &model.meta.sha256,
        },
    })
}

/// `GET /v2`: server metadata.
pub fn v2_server_metadata() -> Vec<u8> {
    json(&serde_json::json!({
        "name": "champion-predictor",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// `GET /v1/models/{name}` and `GET /v2/models/{name}/ready`.
pub fn model_ready(model: &ServedModel, ready: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + model.name_json.len() + model.version_json.len());
    out.extend_from_slice(b"{\"name\":");
    out.extend_from_slice(model.name_json.as_bytes());
    out.extend_from_slice(if ready {
        b",\"ready\":true"
    } else {
        b",\"ready\":false"
    });
    out.extend_from_slice(b",\"modelVersion\":");
    out.extend_from_slice(model.version_json.as_bytes());
    out.push(b'}');
    out
}

/// Health bodies: `{"live": true}`, `{"ready": false}`, ….
pub fn flag(model: &ServedModel, key: &str, value: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + model.version_json.len());
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(if value { b"\":true" } else { b"\":false" });
    out.extend_from_slice(b",\"modelVersion\":");
    out.extend_from_slice(model.version_json.as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;
    use serde_json::Value;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("valid JSON")
    }

    #[test]
    fn predict_single_and_list_are_valid_json() {
        let m = sum_model();
        let v = parse(&predict(&m, PredictShape::Single, &[1], &[0.25, 0.75]));
        assert_eq!(v["label"], "good");
        assert_eq!(v["probabilities"]["bad"], 0.25);
        assert_eq!(v["probabilities"]["good"], 0.75);
        assert_eq!(v["modelVersion"], "v1");
        let v = parse(&predict(
            &m,
            PredictShape::List,
            &[1, 0],
            &[0.25, 0.75, 0.9, 0.1],
        ));
        assert_eq!(v[1]["label"], "bad");
        assert_eq!(v[1]["probabilities"]["bad"], 0.9);
        let v = parse(&predict(&m, PredictShape::List, &[], &[]));
        assert_eq!(v, serde_json::json!([]));
    }

    #[test]
    fn v2_response_has_both_outputs_with_shapes() {
        let m = sum_model();
        let all = V2Outputs::ALL_JSON;
        let (body, header_len) = v2_infer(&m, Some("a\"b"), all, &[1, 0], &[0.25, 0.75, 0.9, 0.1]);
        assert_eq!(header_len, None);
        let v = parse(&body);
        assert_eq!(v["model_name"], "wine");
        assert_eq!(v["model_version"], "v1");
        assert_eq!(v["id"], "a\"b");
        assert_eq!(v["outputs"][0]["name"], "label");
        assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2]));
        assert_eq!(v["outputs"][0]["data"], serde_json::json!(["good", "bad"]));
        assert_eq!(v["outputs"][1]["shape"], serde_json::json!([2, 2]));
        assert_eq!(
            v["outputs"][1]["data"],
            serde_json::json!([0.25, 0.75, 0.9, 0.1])
        );
        let only_proba = V2Outputs {
            probabilities: true,
            ..V2Outputs::default()
        };
        let v = parse(&v2_infer(&m, None, only_proba, &[1], &[0.25, 0.75]).0);
        assert_eq!(v["outputs"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["outputs"][0]["name"], "probabilities");
        assert!(v.get("id").is_none());
    }

    #[test]
    fn v2_binary_outputs_follow_the_json_header_in_output_order() {
        let m = sum_model();
        let both = V2Outputs {
            label: true,
            probabilities: true,
            label_binary: true,
            probabilities_binary: true,
        };
        let (body, len) = v2_infer(&m, None, both, &[1, 0], &[0.25, 0.75, 0.9, 0.1]);
        let len = len.expect("a binary response names its header length");
        let v = parse(&body[..len]);
        assert_eq!(
            v["outputs"][0]["parameters"]["binary_data_size"],
            4 + 4 + 4 + 3
        );
        assert!(v["outputs"][0].get("data").is_none());
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 32);
        assert_eq!(v["outputs"][1]["shape"], serde_json::json!([2, 2]));
        let bin = &body[len..];
        assert_eq!(&bin[..15], b"\x04\0\0\0good\x03\0\0\0bad");
        let probs: Vec<f64> = bin[15..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(probs, vec![0.25, 0.75, 0.9, 0.1]);
        // Only the probabilities binary: labels stay JSON data.
        let mixed = V2Outputs {
            label_binary: false,
            ..both
        };
        let (body, len) = v2_infer(&m, None, mixed, &[1], &[0.25, 0.75]);
        let len = len.unwrap();
        let v = parse(&body[..len]);
        assert_eq!(v["outputs"][0]["data"], serde_json::json!(["good"]));
        assert_eq!(body.len() - len, 16);
    }

    #[test]
    fn errors_per_dialect() {
        let m = sum_model();
        let v = parse(&error(Some(&m), "bad \"x\"", true, true));
        assert_eq!(v, serde_json::json!({"error": "bad \"x\""}));
        let v = parse(&error(Some(&m), "bad", false, true));
        assert_eq!(
            v["expectedFeatures"],
            serde_json::json!(["alcohol", "fixed_acidity", "ph"])
        );
        assert_eq!(v["modelVersion"], "v1");
    }

    #[test]
    fn metadata_documents_inputs_and_outputs() {
        let m = sum_model();
        let v = parse(&v2_model_metadata(&m));
        assert_eq!(v["name"], "wine");
        assert_eq!(v["versions"], serde_json::json!(["v1"]));
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([-1, 3]));
        assert_eq!(v["outputs"][1]["shape"], serde_json::json!([-1, 2]));
        let v = parse(&v1_predict(&m, &[0, 1]));
        assert_eq!(v["predictions"], serde_json::json!(["bad", "good"]));
        assert_eq!(parse(&model_ready(&m, true))["ready"], true);
        assert_eq!(parse(&flag(&m, "live", true))["live"], true);
        assert_eq!(parse(&v2_server_metadata())["name"], "champion-predictor");
    }
}
