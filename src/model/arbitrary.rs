//! Generators of outside input for the property tests of its parsers
//! (tests only): any JSON value, and text that is now and then close to
//! what a parser looks for.

use proptest::prelude::*;
use serde_json::Value;

/// Text of any kind: arbitrary Unicode, or the characters `hint` lists,
/// where a parser's near misses are.
pub fn text(hint: &'static str) -> BoxedStrategy<String> {
    let near = proptest::string::string_regex(&format!("[{hint}]{{0,24}}")).expect("a regex");
    prop_oneof![any::<String>(), near].boxed()
}

/// An object's key: any text, or one the parsers look up.
fn key(hint: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        text(hint),
        proptest::sample::select(vec!["start", "end", "ranges", "default", "p", "quality"])
            .prop_map(String::from),
    ]
    .boxed()
}

/// Any JSON value, nested up to four levels, its strings from [`text`].
pub fn json(hint: &'static str) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-5i64..30).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(hint).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(hint), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}
