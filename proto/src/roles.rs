//! Role names and the role hierarchy (`eng/frontend` is a child of `eng`).

/// Why a role name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RoleError {
    /// The role is empty.
    #[error("role name must not be empty")]
    Empty,
    /// The role breaks a naming rule.
    #[error("role '{role}' is invalid: {reason}")]
    Invalid {
        /// The role.
        role: String,
        /// Which rule.
        reason: &'static str,
    },
}

/// Checks a role name as Mesos does: `*`, or `/`-separated components, none
/// of which is `.`, `..` or `*`, starts with `-`, or contains whitespace or a
/// backspace; no leading, trailing or doubled `/`.
pub fn validate(role: &str) -> Result<(), RoleError> {
    if role.is_empty() {
        return Err(RoleError::Empty);
    }
    if role == "*" {
        return Ok(());
    }
    let invalid = |reason| {
        Err(RoleError::Invalid {
            role: role.to_string(),
            reason,
        })
    };
    if role.starts_with('/') || role.ends_with('/') {
        return invalid("it must not start or end with '/'");
    }
    for component in role.split('/') {
        if component.is_empty() {
            return invalid("it must not contain '//'");
        }
        if component == "." || component == ".." || component == "*" {
            return invalid("a component must not be '.', '..' or '*'");
        }
        if component.starts_with('-') {
            return invalid("a component must not start with '-'");
        }
        if component
            .chars()
            .any(|c| c.is_whitespace() || c == '\u{8}' || c.is_control())
        {
            return invalid("it must not contain whitespace or control characters");
        }
    }
    if role.len() > 255 {
        return invalid("it is longer than 255 characters");
    }
    Ok(())
}

/// Whether `ancestor` is `role` itself or one of its ancestors.
pub fn is_self_or_ancestor(ancestor: &str, role: &str) -> bool {
    role == ancestor
        || (role.len() > ancestor.len()
            && role.starts_with(ancestor)
            && role.as_bytes()[ancestor.len()] == b'/')
}

/// The ancestors of `role`, nearest first (`a/b/c` → `a/b`, `a`).
pub fn ancestors(role: &str) -> impl Iterator<Item = &str> {
    let mut current = role;
    std::iter::from_fn(move || {
        let (parent, _) = current.rsplit_once('/')?;
        current = parent;
        Some(parent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["*", "eng", "eng/frontend", "a.b", "a-b"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/eng", "eng/", "a//b", ".", "a/..", "-a", "a b", "a/*"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hierarchy() {
        assert!(is_self_or_ancestor("eng", "eng"));
        assert!(is_self_or_ancestor("eng", "eng/web"));
        assert!(!is_self_or_ancestor("eng", "engine"));
        assert!(!is_self_or_ancestor("eng/web", "eng"));
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a/b", "a"]);
    }
}
