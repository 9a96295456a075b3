//! Property tests of the config parser: any text (arbitrary, or a good config with one
//! line changed, dropped, doubled or added) gives a config or an error, never a panic;
//! every error has a message, and one that a changed line caused names that line or its
//! key.

use proptest::prelude::*;

use crate::property_cases::cases;

use super::{Config, ConfigError, tests::GOOD};

/// The messages of an error: toml's for a parse error, one per problem otherwise.
fn messages(e: &ConfigError) -> Vec<String> {
    match e {
        ConfigError::Read { .. } => vec![e.to_string()],
        ConfigError::Parse { message, .. } => vec![message.clone()],
        ConfigError::Invalid { problems, .. } => problems.clone(),
    }
}

/// Checks the error of any text: a message, and a parse error with its line.
fn check_any(e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert!(!e.to_string().trim().is_empty());
    let ms = messages(e);
    prop_assert!(!ms.is_empty(), "no message: {e:?}");
    for m in &ms {
        prop_assert!(!m.trim().is_empty(), "an empty message in {e:?}");
    }
    if let ConfigError::Parse { message, .. } = e {
        prop_assert!(message.contains("line"), "no line in {message:?}");
    }
    Ok(())
}

/// Values of every type and shape, right and wrong, for any key.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9:./*\\[\\]-]{0,24}".prop_map(|s| format!("{s:?}")),
        any::<String>().prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"\"",
            "\"198.18.1.10:80\"",
            "\"198.18.1.10:0\"",
            "\"[2001:db8::10]:*\"",
            "\"255.255.255.255:80\"",
            "\"0.0.0.0:1\"",
            "\"[::1]:99999\"",
            "\"999.1.1.1:80\"",
            "\"198.18.1.10:80/sctp\"",
            "\"5xs\"",
            "\"0s\"",
            "\"1000000000000h\"",
            "\"200-199\"",
            "\"0777\"",
            "\"0x10\"",
            "\"198.18.255.0/33\"",
            "\"2001:db8::/129\"",
            "[]",
            "[\"\"]",
            "[\"a\", \"a\"]",
            "{}",
            "1.5",
            "nan",
            "inf",
            "1979-05-27",
        ])
        .prop_map(str::to_string),
    ]
}

/// The lines of the good config that set a key, as (line index, key).
fn key_lines() -> Vec<(usize, String)> {
    GOOD.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, _) = l.split_once(" = ")?;
            Some((i, k.trim().to_string()))
        })
        .collect()
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_text_is_a_config_or_an_error_with_a_message(text in any::<String>()) {
        if let Err(e) = Config::parse(&text, "prop.toml") {
            check_any(&e)?;
        }
    }

    #[test]
    fn any_bytes_are_a_config_or_an_error_with_a_message(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = Config::parse(&String::from_utf8_lossy(&bytes), "prop.toml") {
            check_any(&e)?;
        }
    }

    #[test]
    fn toml_shaped_text_is_a_config_or_an_error_with_a_message(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "[datapath]", "[limits]", "[api]", "[metrics]", "[[vip]]",
                    "[vip.health]", "[[vip.backend]]", "[vip.backend.health]", "",
                ]),
                prop::sample::select(key_lines().into_iter().map(|(_, k)| k).collect::<Vec<_>>()),
                value(),
            ),
            0..24,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(table, key, v)| format!("{table}\n{key} = {v}\n"))
            .collect();
        if let Err(e) = Config::parse(&text, "prop.toml") {
            check_any(&e)?;
        }
    }

    /// One key of a good config given another value: accepted, or refused naming the
    /// key or the line.
    #[test]
    fn a_changed_value_is_refused_naming_its_key_or_line(
        at in prop::sample::select(key_lines()),
        v in value(),
    ) {
        let (index, key) = at;
        let text: String = GOOD
            .lines()
            .enumerate()
            .map(|(i, l)| if i == index { format!("{key} = {v}\n") } else { format!("{l}\n") })
            .collect();
        if let Err(e) = Config::parse(&text, "prop.toml") {
            check_any(&e)?;
            let line = format!("line {}", index + 1);
            let named = messages(&e).iter().any(|m| m.contains(&key) || m.contains(&line));
            prop_assert!(named, "{key} = {v} (line {}): the error names neither: {e}", index + 1);
        }
    }

    /// A line of a good config dropped, doubled, or an unknown key added after it.
    #[test]
    fn a_dropped_doubled_or_unknown_line_is_handled(index in 0..GOOD.lines().count(), how in 0..3u8) {
        let mut lines: Vec<String> = GOOD.lines().map(str::to_string).collect();
        match how {
            0 => {
                lines.remove(index);
            }
            1 => lines.insert(index, lines[index].clone()),
            _ => lines.insert(index + 1, "no_such_key = 1".to_string()),
        }
        let text = lines.join("\n");
        if let Err(e) = Config::parse(&text, "prop.toml") {
            check_any(&e)?;
            if how == 2 {
                prop_assert!(e.to_string().contains("no_such_key"), "{e}");
            }
        }
    }

    /// `vipctl apply -f` and `backend add --check...` parse with the same code paths.
    #[test]
    fn vips_and_check_keys_parse_or_are_refused_with_a_message(
        at in prop::sample::select(key_lines()),
        v in value(),
        text in any::<String>(),
    ) {
        let (index, key) = at;
        let changed: String = GOOD
            .lines()
            .enumerate()
            .map(|(i, l)| if i == index { format!("{key} = {v}\n") } else { format!("{l}\n") })
            .collect();
        let limits = Config::parse(GOOD, "good.toml").expect("the good config").limits;
        if let Err(e) = Config::parse_vips(&changed, "prop.toml", &limits) {
            check_any(&e)?;
        }
        for t in [format!("{key} = {v}\n"), text] {
            if let Err(e) = Config::parse_check_keys(&t, "--check") {
                check_any(&e)?;
            }
        }
    }
}
