//! Naming the field a JSON document got wrong, for located errors (the API's 422s and the
//! loan import): serde's path to the value, plus the field a "missing" or "unknown" message
//! names only in its text.

/// The path of the field at fault (`terms.principal`); for a missing field, serde names it in
/// the message only. `whole` names the document itself when no field is at fault.
pub fn field_of(path: &str, message: &str, whole: &str) -> String {
    let named = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match (named, message.starts_with("unknown field")) {
        (Some(n), _) if base.is_empty() => n.to_string(),
        (Some(n), false) => format!("{base}.{n}"),
        (Some(_), true) => base.to_string(),
        (None, _) if base.is_empty() => whole.to_string(),
        (None, _) => base.to_string(),
    }
}

/// The message without serde_json's " at line L column C" (the location is given apart).
pub fn strip_position(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_unknown_and_mistyped_fields_are_named() {
        assert_eq!(
            field_of("borrower", "missing field `phone`", "-"),
            "borrower.phone"
        );
        assert_eq!(field_of(".", "missing field `id`", "-"), "id");
        assert_eq!(
            field_of("bogus", "unknown field `bogus`, expected one of `id`", "-"),
            "bogus"
        );
        assert_eq!(
            field_of("terms.principal", "invalid type: integer `3000`", "-"),
            "terms.principal"
        );
        assert_eq!(field_of(".", "invalid type: map", "(body)"), "(body)");
        assert_eq!(strip_position("bad at line 3 column 9"), "bad");
    }
}
