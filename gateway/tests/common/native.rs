//! Calls to the native `/api/v1` API with a bearer token, and the checks
//! its answers get in every test file.
#![allow(dead_code)]

use serde_json::Value;

use super::{Resp, Server};

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A JSON request, with a bearer token when given.
pub fn call(s: &Server, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    let auth = token.map(bearer);
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    s.req(method, path, &h, body)
}

pub fn get(s: &Server, path: &str, token: &str) -> Resp {
    call(s, "GET", path, Some(token), b"")
}

pub fn send(s: &Server, method: &str, path: &str, token: &str, body: Value) -> Resp {
    call(s, method, path, Some(token), body.to_string().as_bytes())
}

/// The body of a 200 or 201 answer.
#[track_caller]
pub fn ok(r: Resp) -> Value {
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.body
    );
    r.json
}

/// A JSON error with this status and native code.
#[track_caller]
pub fn assert_err(r: &Resp, status: u16, code: i64, what: &str) {
    assert_eq!(r.status, status, "{what}: {} {}", r.status, r.body);
    assert!(
        r.head.contains("content-type: application/json"),
        "{what}: {}",
        r.head
    );
    assert_eq!(r.json["code"].as_i64(), Some(code), "{what}: {}", r.body);
    assert!(r.json["msg"].is_string(), "{what}: {}", r.body);
}

/// (status, code) of an error answer, which must be JSON `{code, msg}`.
#[track_caller]
pub fn err_code(r: &Resp) -> (u16, i64) {
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    assert!(r.json["msg"].is_string(), "{}", r.body);
    (r.status, r.json["code"].as_i64().unwrap_or(0))
}

/// A user's id, looked up by name through the admin API.
pub fn user_id(s: &Server, admin: &str, name: &str) -> u64 {
    let r = ok(get(s, "/api/v1/admin/users?limit=1000", admin));
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap_or_else(|| panic!("no {name}: {r}"))["id"]
        .as_u64()
        .unwrap()
}
