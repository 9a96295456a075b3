//! Property tests of the API request decoder: any bytes, and valid requests with one
//! value replaced, one key dropped or added, or their text cut or changed, decode to a
//! request or to a non-empty message for the client, never a panic. A decoded VIP or
//! backend then goes through the same validation a runtime change gets.

use proptest::prelude::*;

use crate::property_cases::cases;
use serde_json::{Value, json};

use super::decode_request;
use crate::{
    config::{AdminState, Config, Protocol, validate_vips},
    protocol::{Change, Request},
};

const CONFIG: &str = r#"
[[vip]]
address = "198.18.1.10:80"
[vip.health]
type = "http"
path = "/healthz"
interval = "1s"
[[vip.backend]]
address = "198.18.2.1:8080"
weight = 2
[vip.backend.health]
type = "tcp"
"#;

/// One request of every kind, as vipctl sends them.
fn requests() -> Vec<Request> {
    let cfg = Config::parse(CONFIG, "prop.toml").expect("the test's config is valid");
    let spec = cfg.vips[0].clone();
    let backend = spec.backends[0].clone();
    let vip = spec.id;
    vec![
        Request::Status,
        Request::Reload,
        Request::Flow {
            proto: Protocol::Tcp,
            src: "198.18.0.1:40000".parse().expect("address"),
            dst: "198.18.1.10:80".parse().expect("address"),
        },
        Request::Apply {
            text: CONFIG.to_string(),
            origin: "vips.toml".to_string(),
            dry_run: true,
        },
        Request::Change {
            change: Change::VipAdd {
                spec: Box::new(spec),
            },
        },
        Request::Change {
            change: Change::VipDel { vip },
        },
        Request::Change {
            change: Change::BackendAdd { vip, backend },
        },
        Request::Change {
            change: Change::BackendDel {
                vip,
                addr: "198.18.2.1:8080".parse().expect("address"),
            },
        },
        Request::Change {
            change: Change::BackendSet {
                vip,
                addr: "[2001:db8::2]:80".parse().expect("address"),
                weight: Some(3),
                state: Some(AdminState::Drain),
            },
        },
    ]
}

fn lines() -> Vec<String> {
    requests()
        .iter()
        .map(|r| serde_json::to_string(r).expect("requests serialize") + "\n")
        .collect()
}

/// Decodes `line`, and validates what a change would add; checks the messages.
fn check(line: &[u8]) -> Result<(), TestCaseError> {
    match decode_request(line) {
        Err(why) => prop_assert!(!why.trim().is_empty(), "an empty message for {line:?}"),
        Ok(Request::Change {
            change: Change::VipAdd { spec },
        }) => {
            let limits = Config::parse("", "empty.toml")
                .expect("an empty config")
                .limits;
            if let Err(problems) = validate_vips(&[*spec], &limits) {
                prop_assert!(problems.iter().all(|p| !p.trim().is_empty()));
            }
        }
        Ok(_) => {}
    }
    Ok(())
}

/// Nodes of a JSON document, in pre-order.
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Replaces the `n`th node (pre-order) with `new`.
fn replace(v: &mut Value, n: &mut usize, new: &Value) -> bool {
    if *n == 0 {
        *v = new.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| replace(x, n, new)),
        Value::Object(o) => o.values_mut().any(|x| replace(x, n, new)),
        _ => false,
    }
}

/// Removes the `n`th key (pre-order over objects' keys) wherever it is.
fn drop_key(v: &mut Value, n: &mut usize) -> bool {
    match v {
        Value::Array(a) => a.iter_mut().any(|x| drop_key(x, n)),
        Value::Object(o) => {
            if *n < o.len() {
                let k = o.keys().nth(*n).expect("in range").clone();
                o.remove(&k);
                return true;
            }
            *n -= o.len();
            o.values_mut().any(|x| drop_key(x, n))
        }
        _ => false,
    }
}

/// JSON values of every type, right and wrong for any field.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "tcp",
            "udp",
            "sctp",
            "drain",
            "maint",
            "ready",
            "http",
            "https",
            "none",
            "status",
            "change",
            "vip_add",
            "backend_set",
            "198.18.1.10:80",
            "198.18.1.10:*",
            "[2001:db8::1]:0",
            "999.0.0.1:80",
            "1s",
            "0s",
            "5xs",
            "200-299",
            "300-200",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_bytes_decode_or_get_a_message(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes)?;
    }

    #[test]
    fn any_json_decodes_or_gets_a_message(v in json_value(), cmd in prop::sample::select(vec!["status", "change", "apply", "flow", "reload", "nope"])) {
        check(serde_json::to_string(&v).expect("serializes").as_bytes())?;
        // With a command tag, so the decoder gets past it.
        let tagged = match v {
            Value::Object(mut o) => {
                o.insert("cmd".into(), json!(cmd));
                Value::Object(o)
            }
            other => json!({ "cmd": cmd, "change": other }),
        };
        check(serde_json::to_string(&tagged).expect("serializes").as_bytes())?;
    }

    /// One value of a valid request (any node, containers included) replaced.
    #[test]
    fn a_valid_request_with_a_value_replaced(
        line in prop::sample::select(lines()),
        at in any::<prop::sample::Index>(),
        new in json_value(),
    ) {
        let mut v: Value = serde_json::from_str(&line).expect("valid JSON");
        let mut n = at.index(count(&v));
        prop_assert!(replace(&mut v, &mut n, &new));
        check(serde_json::to_string(&v).expect("serializes").as_bytes())?;
    }

    /// One key of a valid request dropped, or an unknown one added.
    #[test]
    fn a_valid_request_with_a_key_dropped_or_added(
        line in prop::sample::select(lines()),
        at in any::<prop::sample::Index>(),
        add in any::<bool>(),
    ) {
        let mut v: Value = serde_json::from_str(&line).expect("valid JSON");
        if add {
            if let Value::Object(o) = &mut v {
                o.insert("unknown_key".into(), json!(1));
            }
        } else {
            let keys = line.matches("\":").count().max(1);
            drop_key(&mut v, &mut at.index(keys));
        }
        check(serde_json::to_string(&v).expect("serializes").as_bytes())?;
    }

    /// A valid request's text cut, a byte changed, or bytes inserted.
    #[test]
    fn a_valid_request_with_its_text_damaged(
        line in prop::sample::select(lines()),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut b = line.into_bytes();
        let i = at.index(b.len());
        match how {
            0 => b.truncate(i),
            1 => b[i] = byte,
            _ => b.insert(i, byte),
        }
        check(&b)?;
    }
}

#[test]
fn every_valid_request_decodes() {
    for line in lines() {
        decode_request(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}
