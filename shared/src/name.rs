//! Node names: the identity a node's certificate carries (its subject common name).

/// Checks a node name: 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit. Names end up in file names, log lines and metric labels, so nothing
/// else is allowed.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "node name {name:?} must be 1 to 63 characters long"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "node name {name:?} must start with a letter or digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "node name {name:?} contains {bad:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        assert!(validate_node_name("storage-01").is_ok());
        assert!(validate_node_name("ray.head_2").is_ok());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("-x").is_err());
        assert!(validate_node_name("a/b").is_err());
        assert!(validate_node_name("a b").is_err());
        assert!(validate_node_name(&"a".repeat(64)).is_err());
    }
}
