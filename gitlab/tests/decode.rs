//! Properties of the job payload decoder: it never panics, and a wrong-typed field names its path
//! while the job's id and token still come through.

use std::path::Path;

use drover_gitlab::api::{JobDecodeError, JobResponse, decode_job};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn fixture() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gitlab-api/job-response.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The fixture as drover models it: decoded and encoded again, so every member is a field drover
/// reads (the fixture's extra keys are ignored by design and cannot be wrong).
fn modelled() -> Value {
    let job = decode_job(&serde_json::to_vec(&fixture()).unwrap()).unwrap();
    serde_json::to_value(&job).unwrap()
}

/// Fields that take any JSON (kept as raw values), or a string or a number: no type is wrong there.
const ANY_TYPE: &[&str] = &[
    "inputs",
    "secrets",
    "policy_options",
    "suspend_options",
    "tracing",
    "kubernetes",
    "executor_opts",
    "instance_id",
    "project_jobs_running_on_instance_runners_count",
];

/// Every member below the top level's `id` and `token`, as (JSON pointer, serde path, value).
fn members(value: &Value, pointer: &str, path: &str, out: &mut Vec<(String, String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if ANY_TYPE.contains(&key.as_str())
                    || (pointer.is_empty() && (key == "id" || key == "token"))
                {
                    continue;
                }
                let p = format!("{pointer}/{key}");
                let s = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                // A `null` is an absent optional value: what type would be wrong there is the
                // schema's to say, not the value's (`7` is right for `scoped_user_id`).
                if !v.is_null() {
                    out.push((p.clone(), s.clone(), v.clone()));
                }
                members(v, &p, &s, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{pointer}/{i}");
                let s = format!("{path}[{i}]");
                out.push((p.clone(), s.clone(), v.clone()));
                members(v, &p, &s, out);
            }
        }
        _ => {}
    }
}

/// A value of another JSON type than `value` (choice picks which).
fn other_type(value: &Value, choice: usize) -> Value {
    let candidates = [
        Value::String("wrong".into()),
        Value::from(7),
        Value::Bool(true),
        Value::Array(vec![Value::from(1)]),
        Value::Object(Map::new()),
    ];
    let same = |c: &Value| {
        matches!(
            (c, value),
            (Value::String(_), Value::String(_))
                | (Value::Number(_), Value::Number(_))
                | (Value::Bool(_), Value::Bool(_))
                | (Value::Array(_), Value::Array(_))
                | (Value::Object(_), Value::Object(_))
        )
    };
    let others: Vec<&Value> = candidates.iter().filter(|c| !same(c)).collect();
    others[choice % others.len()].clone()
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("token".to_string()),
                    Just("steps".to_string()),
                    Just("image".to_string()),
                    Just("variables".to_string()),
                    ".{0,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn any_json_or_bytes_never_panic_the_decoder(value in json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_job(&serde_json::to_vec(&value).unwrap());
        let _ = decode_job(&bytes);
    }

    #[test]
    fn any_json_in_any_field_still_names_the_job(pick in any::<prop::sample::Index>(), value in json()) {
        let mut tree = fixture();
        let mut all = Vec::new();
        members(&tree, "", "", &mut all);
        let (pointer, _, _) = &all[pick.index(all.len())];
        *tree.pointer_mut(pointer).unwrap() = value;
        match decode_job(&serde_json::to_vec(&tree).unwrap()) {
            Ok(job) => prop_assert_eq!(job.id, fixture()["id"].as_u64().unwrap()),
            Err(JobDecodeError::Job(bad)) => {
                prop_assert_eq!(bad.id, fixture()["id"].as_u64().unwrap());
                prop_assert_eq!(bad.token.expose(), fixture()["token"].as_str().unwrap().to_string());
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn a_field_of_another_type_is_named_by_its_path(pick in any::<prop::sample::Index>(), choice in 0usize..4) {
        let mut tree = modelled();
        let mut all = Vec::new();
        members(&tree, "", "", &mut all);
        let (pointer, path, old) = &all[pick.index(all.len())];
        let new = other_type(old, choice);
        *tree.pointer_mut(pointer).unwrap() = new.clone();
        match decode_job(&serde_json::to_vec(&tree).unwrap()) {
            Err(JobDecodeError::Job(bad)) => {
                prop_assert_eq!(&bad.error.path, path, "{} replaced by {}: {}", path, new, bad.error);
                prop_assert_eq!(bad.id, fixture()["id"].as_u64().unwrap());
                prop_assert_eq!(bad.token.expose(), fixture()["token"].as_str().unwrap().to_string());
            }
            other => prop_assert!(false, "{path} replaced by {new}: {other:?}"),
        }
    }
}

#[test]
fn the_modelled_fixture_round_trips() {
    let job: JobResponse = decode_job(&serde_json::to_vec(&modelled()).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&job).unwrap(), modelled());
}
