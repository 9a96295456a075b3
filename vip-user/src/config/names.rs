//! Enums whose values are words in the config file, the API, `vipctl`'s arguments and its
//! output. [`named_enum!`] spells each word once and derives from it `Display`,
//! `FromStr`, serde and clap's `ValueEnum`, so the four can never disagree.

/// A word that is not one of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}: use {}", one_of(.choices))]
pub struct UnknownName {
    /// What the word should have named ("mode", "protocol", ...).
    pub what: &'static str,
    /// The word given.
    pub given: String,
    /// The words that are allowed.
    pub choices: &'static [&'static str],
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(choices: &[&str]) -> String {
    match choices {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Defines an enum of unit variants, each with its one spelling:
///
/// ```ignore
/// named_enum! {
///     /// How packets reach the backends of a VIP.
///     #[derive(Default)]
///     pub enum Mode: "mode" {
///         #[default]
///         Tunnel = "tunnel",
///         DsrL2 = "dsr-l2",
///     }
/// }
/// ```
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value's word, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word for this value.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::config::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| $crate::config::names::UnknownName {
                        what: $what,
                        given: s.to_string(),
                        choices: Self::NAMES,
                    })
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                word.parse().map_err(|_| {
                    <D::Error as ::serde::de::Error>::unknown_variant(&word, Self::NAMES)
                })
            }
        }

        impl ::clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
                Some(::clap::builder::PossibleValue::new(self.name()))
            }
        }
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::*;

    named_enum! {
        /// A test enum.
        pub enum Colour: "colour" {
            /// Red.
            Red = "red",
            /// Light blue.
            LightBlue = "light-blue",
        }
    }

    #[test]
    fn one_spelling_serves_display_parse_serde_and_clap() {
        use clap::ValueEnum;
        for (v, word) in [(Colour::Red, "red"), (Colour::LightBlue, "light-blue")] {
            assert_eq!(v.to_string(), word);
            assert_eq!(word.parse::<Colour>(), Ok(v));
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{word}\""));
            assert_eq!(
                serde_json::from_str::<Colour>(&format!("\"{word}\"")).unwrap(),
                v
            );
            assert_eq!(<Colour as ValueEnum>::from_str(word, false), Ok(v));
        }
        let e = "green".parse::<Colour>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown colour \"green\": use red or light-blue"
        );
        let e = serde_json::from_str::<Colour>("\"green\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `green`"), "{e}");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
