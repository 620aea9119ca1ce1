//! `--format '{{.State.Pid}}'`: Docker's Go templates over the same documents `inspect` and
//! `ps --format json` print, with Docker's helper functions (`json`, `join`, `upper`,
//! `lower`). A template error is one line, like every other error.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use gtmpl_value::{FuncError, Value};

/// Renders `template` against one document; Docker adds the newline after each.
pub fn render(template: &str, doc: &serde_json::Value) -> Result<String> {
    let mut t = gtmpl::Template::default();
    t.add_func("json", json);
    t.add_func("join", join);
    t.add_func("upper", upper);
    t.add_func("lower", lower);
    t.parse(template).map_err(|e| anyhow!("template {template:?}: {e}"))?;
    t.render(&gtmpl::Context::from(to_gtmpl(doc))).map_err(|e| anyhow!("template {template:?}: {e}"))
}

fn to_gtmpl(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (_, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect::<HashMap<_, _>>())
        }
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.clone().into(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into(),
            (_, Some(i)) => i.into(),
            _ => n.as_f64().map(Into::into).unwrap_or(serde_json::Value::Null),
        },
        Value::Array(a) => a.iter().map(to_json).collect(),
        Value::Object(m) | Value::Map(m) => {
            // Sorted keys, so output is stable.
            let sorted: std::collections::BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
    }
}

fn one(name: &str, args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [v] => Ok(v.clone()),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_json(&one("json", args)?).to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Array(items), Value::String(sep)] = args else {
        return Err(FuncError::Generic("join takes a list and a separator: {{join .List \",\"}}".into()));
    };
    let words: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => to_json(other).to_string(),
        })
        .collect();
    Ok(Value::String(words.join(sep)))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    match one("upper", args)? {
        Value::String(s) => Ok(Value::String(s.to_uppercase())),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    match one("lower", args)? {
        Value::String(s) => Ok(Value::String(s.to_lowercase())),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn docker_templates() {
        let doc = json!({"State": {"Pid": 42, "Running": true}, "Name": "/web",
            "NetworkSettings": {"Networks": {"app": {"IPAddress": "10.0.0.2", "Aliases": ["db", "store"]}}}});
        assert_eq!(super::render("{{.State.Pid}}", &doc).unwrap(), "42");
        assert_eq!(super::render("{{.NetworkSettings.Networks.app.IPAddress}}", &doc).unwrap(), "10.0.0.2");
        assert_eq!(super::render("{{json .NetworkSettings.Networks.app.Aliases}}", &doc).unwrap(), r#"["db","store"]"#);
        assert_eq!(super::render("{{join .NetworkSettings.Networks.app.Aliases \",\"}}", &doc).unwrap(), "db,store");
        assert_eq!(
            super::render("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}", &doc).unwrap(),
            "app=10.0.0.2"
        );
        assert!(super::render("{{.State.Pid", &doc).is_err());
    }
}
