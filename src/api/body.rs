//! Reading a job definition from a JSON body (`PUT /v1/jobs/{name}`): the jobs file's keys
//! as a JSON object. Every error names the field.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::catalog::JobDef;
use crate::core::job::RawJob;

/// The definition in `body` for the job named `name` in the path. The body's `name`, when
/// present, must be the same; when absent, the path's is used. Checks the keys and their
/// types here and the values (schedule, durations, policies) with the jobs file's rules,
/// so every error names the field.
pub fn job_from_json(name: &str, body: &[u8]) -> Result<RawJob, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_job(format!(
            "the body must be a JSON object of job keys (`name`, `schedule`, `command`, ...), not {}",
            kind(&value)
        )));
    };
    // One key at a time, so a type error names its key (serde's own message does not).
    for (key, value) in &fields {
        let one = Map::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = serde_json::from_value::<RawJob>(Value::Object(one)) {
            return Err(ApiError::invalid_job(format!(
                "job `{name}`: `{key}`: {}",
                strip_position(&e.to_string())
            )));
        }
    }
    let mut raw: RawJob = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::invalid_job(format!("job `{name}`: {e}")))?;
    match &raw.name {
        Some(n) if n != name => {
            return Err(ApiError::invalid_job(format!(
                "`name`: the body names job `{n}` but the path names `{name}`; they must agree"
            )));
        }
        Some(_) => {}
        None => raw.name = Some(name.to_string()),
    }
    JobDef::from_raw(raw.clone()).map_err(|e| ApiError::invalid_job(e.to_string()))?;
    Ok(raw)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's messages for values end with ` at line 0 column 0`, which says nothing
/// about a value already parsed.
fn strip_position(message: &str) -> &str {
    message
        .find(" at line ")
        .map_or(message, |at| &message[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(name: &str, body: &str) -> String {
        job_from_json(name, body.as_bytes())
            .unwrap_err()
            .body
            .message
    }

    #[test]
    fn a_good_body_reads_and_the_path_names_the_job() {
        let raw = job_from_json(
            "dyn",
            br#"{"schedule": "* * * * * *", "command": "echo hi", "retries": 2, "timeout": null}"#,
        )
        .unwrap();
        assert_eq!(raw.name.as_deref(), Some("dyn"));
        assert_eq!(raw.retries, Some(2));
        assert_eq!(raw.timeout, None);
        let raw = job_from_json(
            "dyn",
            br#"{"name": "dyn", "schedule": "@every 5s", "command": "true"}"#,
        )
        .unwrap();
        assert_eq!(raw.schedule.as_deref(), Some("@every 5s"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let e = err(
            "j",
            r#"{"schedule": "* * * * * *", "command": "x", "retries": "two"}"#,
        );
        assert!(e.contains("`retries`") && e.contains("job `j`"), "{e}");
        assert!(!e.contains("line 0"), "{e}");
        let e = err(
            "j",
            r#"{"schedule": "* * * * * *", "command": "x", "colour": "red"}"#,
        );
        assert!(e.contains("`colour`"), "{e}");
        let e = err("j", r#"{"schedule": "0 61 * * * *", "command": "x"}"#);
        assert!(e.contains("`schedule`") && e.contains("`minute`"), "{e}");
        let e = err(
            "j",
            r#"{"schedule": "* * * * * *", "command": "x", "timeout": "soon"}"#,
        );
        assert!(e.contains("`timeout`"), "{e}");
        let e = err(
            "j",
            r#"{"schedule": "* * * * * *", "command": "x", "overlap": "queue"}"#,
        );
        assert!(e.contains("`overlap`"), "{e}");
        let e = err("j", r#"{"command": "x"}"#);
        assert!(e.contains("`schedule`") && e.contains("missing"), "{e}");
        let e = err("j", r#"{"schedule": "* * * * * *"}"#);
        assert!(e.contains("`command`") && e.contains("missing"), "{e}");
        let e = err(
            "j",
            r#"{"name": "k", "schedule": "* * * * * *", "command": "x"}"#,
        );
        assert!(
            e.contains("`name`") && e.contains("`k`") && e.contains("`j`"),
            "{e}"
        );
        let e = err(
            "has space",
            r#"{"schedule": "* * * * * *", "command": "x"}"#,
        );
        assert!(e.contains("`name`"), "{e}");
        let e = err("j", r#"["schedule"]"#);
        assert!(e.contains("JSON object") && e.contains("an array"), "{e}");
        let bad = job_from_json("j", b"{\"schedule\": ").unwrap_err();
        assert_eq!(bad.body.code, "bad_json");
    }

    /// Values of every JSON type, for any key.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,40}".prop_map(Value::String),
            prop_oneof![
                Just("* * * * * *"),
                Just("@every 1s"),
                Just("0 61 * * * *"),
                Just("@at 2030-01-01T00:00:00Z"),
                Just("30s"),
                Just("forbid"),
                Just("once"),
                Just("Europe/Paris"),
                Just("echo hi"),
                Just(""),
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "name",
                "schedule",
                "timezone",
                "command",
                "timeout",
                "retries",
                "misfire",
                "catch_up_window",
                "overlap",
            ])
            .prop_map(str::to_string),
            "[a-z_]{1,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any JSON object: no panic; a refusal names a key of the body (or the body),
        /// and an acceptance is a job the jobs file's parser accepts too.
        #[test]
        fn any_object_reads_or_is_refused_naming_a_field(
            fields in prop::collection::btree_map(key(), json_value(), 0..6),
        ) {
            let body = serde_json::to_vec(&Value::Object(fields.clone().into_iter().collect())).unwrap();
            match job_from_json("j", &body) {
                Ok(raw) => {
                    prop_assert_eq!(raw.name.as_deref(), Some("j"));
                    prop_assert!(JobDef::from_raw(raw).is_ok());
                }
                Err(e) => {
                    prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                    let m = &e.body.message;
                    // A missing required key is named too.
                    let named = fields.keys().any(|k| m.contains(&format!("`{k}`")))
                        || m.contains("`schedule`") || m.contains("`command`");
                    prop_assert!(named, "{} does not name a field of {:?}", m, fields);
                }
            }
        }

        /// Any bytes: no panic, and a 400.
        #[test]
        fn any_bytes_are_read_or_refused_with_a_400(body in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = job_from_json("j", &body) {
                prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            }
        }
    }
}
