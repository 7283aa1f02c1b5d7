//! JSON Merge Patch (RFC 7396), used by `PATCH /v1/providers/{id}`.

use serde_json::Value;

/// Applies `patch` to `target` as RFC 7396 describes: objects merge
/// recursively, `null` removes a member, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge patch that turns `from` into `to`: members of `to` that differ
/// (objects diffed recursively), and `null` for members only `from` has.
/// `merge_patch(from, &merge_diff(from, to))` gives `to` whenever `to`
/// holds no `null` (RFC 7396 cannot set one).
pub fn merge_diff(from: &Value, to: &Value) -> Value {
    let (Value::Object(a), Value::Object(b)) = (from, to) else {
        return to.clone();
    };
    let mut patch = serde_json::Map::new();
    for (key, value) in b {
        match a.get(key) {
            Some(old) if old == value => {}
            Some(old @ Value::Object(_)) if value.is_object() => {
                patch.insert(key.clone(), merge_diff(old, value));
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    for key in a.keys().filter(|k| !b.contains_key(*k)) {
        patch.insert(key.clone(), Value::Null);
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7396 section 3 and appendix A.
    #[test]
    fn rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn a_diff_patches_one_into_the_other() {
        let cases = [
            (json!({}), json!({})),
            (json!({"a": 1}), json!({"a": 1})),
            (json!({"a": 1, "b": {"c": 1, "d": [1]}}), json!({"b": {"c": 2, "e": "x"}, "f": true})),
            (json!({"a": {"b": {"c": 1}}}), json!({"a": {"b": "flat"}})),
            (json!({"a": "x"}), json!({"a": {"nested": 1}})),
            (json!({"p": {"keep": 1, "drop": 2}}), json!({"p": {"keep": 1}})),
        ];
        for (from, to) in cases {
            let patch = merge_diff(&from, &to);
            let mut merged = from.clone();
            merge_patch(&mut merged, &patch);
            assert_eq!(merged, to, "diff {patch} of {from}");
        }
        assert_eq!(merge_diff(&json!({"a": 1, "b": 2}), &json!({"a": 1})), json!({"b": null}));
    }
}
